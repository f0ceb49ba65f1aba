"""torch-cuda-call: calls into `torch.cuda` become the backend-neutral helper call.

`torch.cuda.empty_cache()` frees nothing on MPS and `torch.cuda.amp.autocast()` does not exist
there; the helper dispatches to cuda, mps or nothing at run time. Calls are found by qualified
name, so `import torch.cuda as tc; tc.empty_cache()` and `from torch.cuda import empty_cache` are
rewritten too. Arguments are kept as they are.

Options:
  map = { "torch.cuda.empty_cache" = "empty_cache", ... }   qualified name -> helper function
"""

from __future__ import annotations

from typing import Any

import libcst as cst

from latentsync_mps.port.rules.base import PythonRuleKind, RuleCommand, RuleError
from latentsync_mps.port.rules.names import ImportedNameProvider


class CudaCallCommand(RuleCommand["CudaCall"]):
    METADATA_DEPENDENCIES = (*RuleCommand.METADATA_DEPENDENCIES, ImportedNameProvider)

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        names = self.get_metadata(ImportedNameProvider, original_node.func, set())
        for qualified in names:
            target = self.kind.mapping.get(qualified.name)
            if target is not None:
                new = updated_node.with_changes(func=self.helper(target))
                self.record(original_node, new)
                return new
        return updated_node


class CudaCall(PythonRuleKind):
    name = "torch-cuda-call"
    command = CudaCallCommand

    def configure(self, options: dict[str, Any]) -> None:
        mapping = self.take(options, "map", dict)
        for source, target in mapping.items():
            if not isinstance(target, str) or not target.isidentifier():
                raise RuleError(f"option 'map': '{source}' must map to a helper function name")
        self.mapping: dict[str, str] = mapping
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        # The last name of each call ("empty_cache") also catches `from torch.cuda import ...`.
        return tuple(sorted({name.rpartition(".")[2] for name in self.mapping}))
