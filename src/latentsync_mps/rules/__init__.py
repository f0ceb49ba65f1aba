"""Rule kinds. Importing this package registers every kind under its `kind = "..."` name."""

from . import call_argument, cuda_call, device_literal, replace_expression, requirements, upcast_call
from .base import Change, FileContext, Rule, RuleError, RuleKind

__all__ = [
    "Change",
    "FileContext",
    "Rule",
    "RuleError",
    "RuleKind",
    "call_argument",
    "cuda_call",
    "device_literal",
    "replace_expression",
    "requirements",
    "upcast_call",
]
