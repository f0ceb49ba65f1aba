"""cuda-type-check: `x.device.type == "cuda"` becomes `x.device.type != "cpu"`.

Code that asks "is this tensor on the GPU?" by comparing with "cuda" answers no for an MPS
tensor, so the CPU-side step it guards (moving a result back before handing it to ComfyUI, for
example) is skipped on a Mac. Comparing with "cpu" asks the question the code means, and gives
the same answer on NVIDIA. `!= "cuda"` becomes `== "cpu"`. Only comparisons of an attribute
chain ending in `.device.type` are touched: `device.type != "cuda"` inside a function that
validates CUDA device strings (InsightFace's cuda_to_int) is a different question.

No options.
"""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from latentsync_mps.port.rules.base import PythonRuleKind, RuleCommand

_DEVICE_TYPE = m.Attribute(value=m.Attribute(attr=m.Name("device")), attr=m.Name("type"))


def cuda_type_comparison(node: cst.Comparison) -> bool:
    """`<x>.device.type == "cuda"` or `!= "cuda"`, either way round."""
    if len(node.comparisons) != 1:
        return False
    target = node.comparisons[0]
    if not isinstance(target.operator, cst.Equal | cst.NotEqual):
        return False
    sides = (node.left, target.comparator)
    literal = [s for s in sides if isinstance(s, cst.SimpleString) and s.evaluated_value == "cuda"]
    chain = [s for s in sides if m.matches(s, _DEVICE_TYPE)]
    return len(literal) == 1 and len(chain) == 1


class CudaTypeCheckCommand(RuleCommand["CudaTypeCheck"]):
    def leave_Comparison(self, original_node: cst.Comparison, updated_node: cst.Comparison) -> Any:
        if not cuda_type_comparison(original_node):
            return updated_node
        target = updated_node.comparisons[0]
        flipped = cst.NotEqual if isinstance(target.operator, cst.Equal) else cst.Equal
        operator = flipped(
            whitespace_before=target.operator.whitespace_before, whitespace_after=target.operator.whitespace_after
        )

        def to_cpu(side: cst.BaseExpression) -> cst.BaseExpression:
            if isinstance(side, cst.SimpleString):
                quote = side.quote if side.quote in ('"', "'") else '"'
                return side.with_changes(value=f"{side.prefix}{quote}cpu{quote}")
            return side

        new = updated_node.with_changes(
            left=to_cpu(updated_node.left),
            comparisons=[target.with_changes(operator=operator, comparator=to_cpu(target.comparator))],
        )
        self.record(original_node, new)
        return new


class CudaTypeCheck(PythonRuleKind):
    name = "cuda-type-check"
    command = CudaTypeCheckCommand

    def needles(self) -> tuple[str, ...]:
        return ("cuda",)
