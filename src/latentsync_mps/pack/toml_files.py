"""Reading TOML: tomllib, or tomli on Python 3.10. Every TOML file lsync-port reads goes through here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from latentsync_mps.pack.errors import TomlSyntaxError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def parse_toml(text: str) -> dict[str, Any]:
    """The document in `text`; TomlSyntaxError when it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise TomlSyntaxError(str(error)) from None


def read_toml(path: Path) -> dict[str, Any]:
    """The document in the UTF-8 file `path`: OSError or UnicodeDecodeError when it cannot be read,
    TomlSyntaxError when it is not TOML."""
    return parse_toml(path.read_text(encoding="utf-8"))
