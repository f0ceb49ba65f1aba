"""Detection-only kind about device strings (rule report-cuda-literal in patches/findings/python.toml).

- report-cuda-literal: a "cuda" / "cuda:N" string (or f"cuda:{i}"), as `cuda_literal` and
  `cuda_fstring` of the rewriting kind device-literal recognise it, where a device is chosen:
  a keyword named in `keywords`, a parameter default or an assignment to a name in `names`,
  the first argument of a device move (`.to(...)`, `torch.device(...)`: `is_device_move`, shared
  with device-literal); and in any other argument of a call (`torch.autocast("cuda")`,
  `Encoder(256, "cuda:0")`), except calls whose callee is text (`text_callees`, or a name
  ending in one of `text_suffixes`: a message, an exception, a string test), `.cuda(...)`
  (reported as a move) and the runtime helper's calls (ported). A string naming one of torch's
  CUDA types in a call argument (`x.type("torch.cuda.FloatTensor")`: `type_prefix`) is
  reported with its text from `texts` (as report-cuda-reference), always as an error.
"""

from __future__ import annotations

from typing import Any

import libcst as cst

from latentsync_mps.pack.cuda_texts import CudaTexts
from latentsync_mps.port.rules.base import HELPER
from latentsync_mps.port.rules.device_literal import cuda_fstring, cuda_literal, is_device_move
from latentsync_mps.port.rules.report import DetectionFinder, PythonDetectionKind, quoted


class _LiteralFinder(DetectionFinder):
    kind: ReportCudaLiteral

    def _literal(self, value: cst.BaseExpression) -> None:
        if cuda_literal(value) is not None or cuda_fstring(value):
            self.add(value)

    # -- device positions -------------------------------------------------------------------

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None and node.keyword.value in self.kind.keywords:
            self._literal(node.value)

    def visit_Param(self, node: cst.Param) -> None:
        if node.default is not None and node.name.value in self.kind.names:
            self._literal(node.default)

    def visit_Assign(self, node: cst.Assign) -> None:
        if all(isinstance(t.target, cst.Name) and t.target.value in self.kind.names for t in node.targets):
            self._literal(node.value)

    def leave_Call(self, original_node: cst.Call) -> None:
        args = original_node.args
        if is_device_move(original_node.func, self.qualified(original_node.func)) and args:
            if args[0].keyword is None:
                self._literal(args[0].value)

    # -- any other argument of a call ---------------------------------------------------------

    def visit_Call(self, node: cst.Call) -> None:
        kind = self.kind
        func = node.func
        callee = func.attr.value if isinstance(func, cst.Attribute) else getattr(func, "value", "")
        if callee in kind.text_callees or str(callee).endswith(kind.text_suffixes):
            return
        if callee == "cuda":
            return  # `.cuda("cuda:1")`: one finding, cuda-method, for the call and its device
        if HELPER in self.code(func):
            return  # the helper takes upstream's CUDA spelling as the preferred CUDA device: ported
        # The first argument of a move is a device position (leave_Call); `to(...)` by any name skips it.
        skips_first = callee == "to" or "torch.device" in self.qualified(func)
        for index, arg in enumerate(node.args):
            if arg.keyword is not None and arg.keyword.value in kind.keywords:
                continue
            if index == 0 and skips_first and arg.keyword is None:
                continue
            value = arg.value
            if cuda_literal(value) is not None or cuda_fstring(value):
                self.add(value)
            elif isinstance(value, cst.SimpleString) and str(value.evaluated_value).startswith(kind.type_prefix):
                name = str(value.evaluated_value)
                text = kind.texts(name, "torch-cuda")
                self.add(value, finding=text.kind, severity="error", why=f"{name} {text.why}", fix=text.fix)


class ReportCudaLiteral(PythonDetectionKind):
    name = "report-cuda-literal"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.keywords = frozenset(self.strings(options, "keywords"))
        self.names = frozenset(self.strings(options, "names"))
        self.text_callees = frozenset(self.strings(options, "text_callees"))
        self.text_suffixes = self.strings(options, "text_suffixes")
        self.type_prefix = self.take(options, "type_prefix", str)
        self.take(options, "texts", str)
        # The file `texts` names, read by the pack when it loaded the rule (pack/cuda_texts.py).
        self.texts: CudaTexts = self.rule.inputs.get("texts")

    def needles(self) -> tuple[str, ...]:
        return (*quoted("cuda"), *quoted(self.type_prefix))

    finder_class = _LiteralFinder
