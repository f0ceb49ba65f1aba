"""device-message: a message that names the device in use says the one the helper chose.

`print(f"Running on cuda with {dtype}")` is true on an NVIDIA machine only; whisper's
`warnings.warn("Performing inference on CPU when CUDA is available")`, once its check is ported,
fires on a Mac when MPS is available. In the message string of a call named in `calls`, each
match of a pattern in `device` becomes `{_lsync_port.device()}`, and the string an f-string
(its braces doubled). Strings elsewhere (a device position, a comparison) are other rules' or stay.

Options:
  calls   = ["print", "warnings.warn", "logger.*", "logging.*"]   dotted callee names; `x.*` any method of x
  device  = ['(?<=\\bon )(?i:cuda)\\b']   regular expressions over the message text
"""

from __future__ import annotations

import re
from typing import Any

import libcst as cst

from latentsync_mps.port.rules.base import HELPER, PythonRuleKind, RuleCommand, RuleError
from latentsync_mps.port.rules.names import dotted_name

_DEVICE = cst.FormattedStringExpression(cst.parse_expression(f"{HELPER}.device()"))


class DeviceMessageCommand(RuleCommand["DeviceMessage"]):
    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        name = dotted_name(original_node.func)
        if name is None or not self.kind.names_call(name):
            return updated_node
        args = list(updated_node.args)
        for index, (before, arg) in enumerate(zip(original_node.args, updated_node.args, strict=True)):
            new = self._message(arg.value)
            if new is not None:
                self.require_helper()
                self.record(before.value, new)
                args[index] = arg.with_changes(value=new)
        return updated_node.with_changes(args=args)

    def _message(self, value: cst.BaseExpression) -> cst.FormattedString | None:
        if isinstance(value, cst.SimpleString):
            prefix = value.prefix.lower()
            if "b" in prefix:
                return None
            text = value.raw_value
            if not self.kind.finds(text):
                return None
            parts = self._split(text.replace("{", "{{").replace("}", "}}"))
            start = prefix.replace("u", "") + "f" + value.quote
            return cst.FormattedString(parts=parts, start=start, end=value.quote)
        if isinstance(value, cst.FormattedString):
            texts = [p for p in value.parts if isinstance(p, cst.FormattedStringText)]
            if not any(self.kind.finds(p.value) for p in texts):
                return None
            parts: list[cst.BaseFormattedStringContent] = []
            for part in value.parts:
                parts += self._split(part.value) if isinstance(part, cst.FormattedStringText) else [part]
            return value.with_changes(parts=parts)
        return None

    def _split(self, text: str) -> list[cst.BaseFormattedStringContent]:
        parts: list[cst.BaseFormattedStringContent] = []
        last = 0
        for match in self.kind.pattern.finditer(text):
            if match.start() > last:
                parts.append(cst.FormattedStringText(text[last : match.start()]))
            parts.append(_DEVICE)
            last = match.end()
        if last < len(text):
            parts.append(cst.FormattedStringText(text[last:]))
        return parts


class DeviceMessage(PythonRuleKind):
    name = "device-message"
    command = DeviceMessageCommand

    def configure(self, options: dict[str, Any]) -> None:
        calls = self.take(options, "calls", list)
        patterns = self.take(options, "device", list)
        if not calls or not patterns:
            raise RuleError("give 'calls' and 'device'")
        self.exact = {c for c in calls if not c.endswith(".*")}
        self.owners = {c[:-2] for c in calls if c.endswith(".*")}
        try:
            self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))
        except re.error as error:
            raise RuleError(f"option 'device': {error}") from None
        # A file can match only if a message names the device (the patterns' device word).
        self.words = ("CUDA", "cuda")
        super().configure(options)

    def names_call(self, name: str) -> bool:
        return name in self.exact or name.rpartition(".")[0] in self.owners

    def finds(self, text: str) -> bool:
        return self.pattern.search(text) is not None

    def needles(self) -> tuple[str, ...]:
        return self.words
