"""What goes wrong reading the pack, as types; `str()` is a message for a person. The CLI
(cli/exits.py) decides what each means as an exit code."""

from __future__ import annotations

from pathlib import Path


class TomlSyntaxError(ValueError):
    """A file is not valid TOML. `str()` is the parser's message."""


class TableError(Exception):
    """A shipped table (forecast.toml, forecast-measured.json, apple-chips.toml) that cannot be read."""

    def __init__(self, path: Path, reason: Exception) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason
