"""Detection-only kinds about attention and upsampling kernels (rules in
patches/findings/python.toml; callees and kernel names are their options).

- report-kernel-pin: a call to one of `callee` (qualified) that pins attention to a kernel.
  It is pinned when its code names one of `kernels` and not `fallback`, or contains
  `disabled_fallback` (spaces ignored). `pinned = true` reports the pinned calls (they fail
  where the kernel does not exist); `pinned = false` the others (a backend switch that pins
  nothing), which also take `guard`.
- report-unwrapped-call: a call to `callee` whose input (first positional argument, or `input=`)
  is not `<x>.to(<wrap>)`, when its `mode` keyword is absent or one of `modes`
  (F.interpolate(x, ...) with nearest upsampling, not round-tripped through float32).
"""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from latentsync_mps.port.rules.base import RuleError
from latentsync_mps.port.rules.report import DetectionFinder, GuardedFinder, PythonDetectionKind


class _KernelPinFinder(GuardedFinder):
    kind: ReportKernelPin

    def visit_Call(self, node: cst.Call) -> None:
        kind = self.kind
        if not self.qualified(node.func) & kind.callee:
            return
        code = self.code(node)
        pinned = any(k in code for k in kind.kernels) and kind.fallback not in code
        if kind.disabled_fallback and kind.disabled_fallback in code.replace(" ", ""):
            pinned = True
        if pinned == kind.pinned and not self.guarded:
            self.add(node, node.func)


class ReportKernelPin(PythonDetectionKind):
    name = "report-kernel-pin"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.callee = frozenset(self.strings(options, "callee"))
        self.kernels = self.strings(options, "kernels")
        self.fallback = self.take(options, "fallback", str)
        self.disabled_fallback = self.take(options, "disabled_fallback", str, "").replace(" ", "")
        self.pinned = self.take(options, "pinned", bool)
        self.guard_shape = self.guard_option(options)
        if not self.callee or not self.kernels:
            raise RuleError("options 'callee' and 'kernels' are required")
        if self.pinned and self.guard_shape is not None:
            raise RuleError("a pinned kernel fails on every other device: 'guard' is only for pinned = false")

    def needles(self) -> tuple[str, ...]:
        return tuple(sorted({name.rpartition(".")[2] for name in self.callee}))

    finder_class = _KernelPinFinder


class _UnwrappedCallFinder(DetectionFinder):
    kind: ReportUnwrappedCall

    def visit_Call(self, node: cst.Call) -> None:
        kind = self.kind
        if kind.callee not in self.qualified(node.func):
            return
        position = next((i for i, a in enumerate(node.args) if a.keyword is None or a.keyword.value == "input"), None)
        if position is None:
            return
        mode = next((a.value for a in node.args if a.keyword is not None and a.keyword.value == "mode"), None)
        if mode is not None and not (isinstance(mode, cst.SimpleString) and mode.evaluated_value in kind.modes):
            return
        if not m.matches(node.args[position].value, kind.wrapped):
            self.add(node)


class ReportUnwrappedCall(PythonDetectionKind):
    name = "report-unwrapped-call"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.callee = self.take(options, "callee", str)
        self.modes = frozenset(self.strings(options, "modes"))
        wrap = self.take(options, "wrap", str)  # "torch.float32"
        parts = wrap.split(".")
        if len(parts) != 2 or not all(p.isidentifier() for p in parts):
            raise RuleError(f"option 'wrap' must be `module.name`: {wrap!r}")
        self.wrapped = m.Call(
            func=m.Attribute(attr=m.Name("to")),
            args=[m.Arg(m.Attribute(value=m.Name(parts[0]), attr=m.Name(parts[1])))],
        )

    def needles(self) -> tuple[str, ...]:
        return (self.callee.rpartition(".")[2],)

    finder_class = _UnwrappedCallFinder
