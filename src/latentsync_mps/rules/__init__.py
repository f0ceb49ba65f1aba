"""Rule kinds. Importing this package registers every kind under its `kind = "..."` name."""

from . import (
    call_argument,
    call_time_default,
    cuda_call,
    cuda_type_check,
    device_literal,
    guard_statement,
    helper_call,
    replace_expression,
    replace_statement,
    replace_value,
    report,
    requirements,
    shell_lines,
    upcast_call,
)
from .base import Change, FileContext, Rule, RuleError, RuleKind

__all__ = [
    "Change",
    "FileContext",
    "Rule",
    "RuleError",
    "RuleKind",
    "call_argument",
    "call_time_default",
    "cuda_call",
    "cuda_type_check",
    "device_literal",
    "guard_statement",
    "helper_call",
    "replace_expression",
    "replace_statement",
    "replace_value",
    "report",
    "requirements",
    "shell_lines",
    "upcast_call",
]
