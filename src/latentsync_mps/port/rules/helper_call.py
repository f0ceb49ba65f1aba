"""helper-call: a call goes through the runtime helper instead, which decides per device.

Two forms:
  functions  qualified name -> helper function; the arguments stay as they are.
             `F.scaled_dot_product_attention(q, k, v, ...)` -> `_lsync_port.scaled_dot_product_attention(q, k, v, ...)`
  methods    callee expression -> helper function; the receiver becomes the first argument.
             `self.vae.decode(latents)` -> `_lsync_port.vae_decode(self.vae, latents)`

Used for what must be done differently on MPS only, such as computing attention and the VAE in
chunks so that no Metal buffer exceeds 2**32 bytes. The helper is the plain call elsewhere, so
CUDA and CPU users pay one Python function call. Functions are found by qualified name (import
aliases followed); method callees are compared by syntax tree.

Options:
  functions = { "torch.nn.functional.scaled_dot_product_attention" = "scaled_dot_product_attention" }
  methods   = { "self.vae.decode" = "vae_decode" }
"""

from __future__ import annotations

from typing import Any

import libcst as cst

from latentsync_mps.port.rules.base import PythonRuleKind, RuleCommand, RuleError
from latentsync_mps.port.rules.base import expression_shape as _shape
from latentsync_mps.port.rules.names import ImportedNameProvider

_EMPTY = cst.Module(body=[])


class HelperCallCommand(RuleCommand["HelperCall"]):
    METADATA_DEPENDENCIES = (*RuleCommand.METADATA_DEPENDENCIES, ImportedNameProvider)

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        kind = self.kind
        for qualified in self.get_metadata(ImportedNameProvider, original_node.func, set()):
            target = kind.functions.get(qualified.name)
            if target is not None:
                new = updated_node.with_changes(func=self.helper(target))
                self.record(original_node, new)
                return new
        if kind.methods and isinstance(original_node.func, cst.Attribute):
            target = kind.methods.get(_shape(_EMPTY.code_for_node(original_node.func)))
            if target is not None and isinstance(updated_node.func, cst.Attribute):
                receiver = cst.Arg(updated_node.func.value, comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
                new = updated_node.with_changes(func=self.helper(target), args=[receiver, *updated_node.args])
                self.record(original_node, new)
                return new
        return updated_node


class HelperCall(PythonRuleKind):
    name = "helper-call"
    command = HelperCallCommand

    def configure(self, options: dict[str, Any]) -> None:
        self.functions: dict[str, str] = self.take(options, "functions", dict, {})
        methods: dict[str, str] = self.take(options, "methods", dict, {})
        if not self.functions and not methods:
            raise RuleError("give 'functions' or 'methods'")
        for source, target in [*self.functions.items(), *methods.items()]:
            if not isinstance(target, str) or not target.isidentifier():
                raise RuleError(f"'{source}' must map to a helper function name")
        self.methods: dict[str | None, str] = {}
        for source, target in methods.items():
            shape = _shape(source)
            if shape is None or "." not in source:
                raise RuleError(f"option 'methods': '{source}' is not a callee such as self.vae.decode")
            self.methods[shape] = target
        self.needle_words = tuple(sorted({name.rpartition(".")[2] for name in [*self.functions, *methods]} - {""}))
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        return self.needle_words
