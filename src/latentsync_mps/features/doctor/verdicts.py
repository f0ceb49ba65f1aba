"""What a doctor check answers: a Check (ok, warning or blocker, what it found, the fix)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

OK, WARNING, BLOCKER = "ok", "warning", "blocker"
STATUSES = (OK, WARNING, BLOCKER)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warning | blocker
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def listing(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
