"""What goes wrong reading the pack, as types; `str()` is a message for a person. The CLI
(cli/exits.py) decides what each means as an exit code."""

from __future__ import annotations

from pathlib import Path


class TomlSyntaxError(ValueError):
    """A file is not valid TOML. `str()` is the parser's message."""


class RuleFileError(Exception):
    """A rule pack is malformed: the message names the file and, where there is one, the rule."""

    def __init__(self, path: Path, message: str, rule_id: str | None = None) -> None:
        where = f"{path}" + (f", rule '{rule_id}'" if rule_id else "")
        super().__init__(f"{where}: {message}")


class TextsFileError(Exception):
    """A rule's texts file (cuda_texts.py) that is missing or malformed; the loader names the rule."""


class ReleaseFactsError(RuleFileError):
    """A bad `facts` table. `str()` names the file, the release and the key, on one line."""

    def __init__(self, path: Path | str, release: str, key: str, message: str) -> None:
        super().__init__(Path(path), f"release '{release}', facts{'.' + key if key else ''}: {message}")


class StackError(Exception):
    """A host stack that is not known, or a stacks.toml that cannot be read: the user names another
    --stack, or regenerates the file."""


class TargetTorchError(Exception):
    """A torch version the shipped MPS tables do not cover, or one that cannot be told: the user
    names another --target-torch."""


class TableError(Exception):
    """A shipped table (forecast.toml, forecast-measured.json, apple-chips.toml) that cannot be read."""

    def __init__(self, path: Path, reason: Exception) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason
