"""What can go wrong below the CLI, one type per cause. Each error's message is the one line the
user reads; which exit code a type means is cli/exits.py's business alone."""

from __future__ import annotations

import errno


class PortError(Exception):
    """An expected failure: the message says what is wrong and what to do."""


class BadInput(PortError):
    """A bad path, option, profile or rule id."""


class NotUpstream(PortError):
    """The tree is not a recognised upstream tree."""


class NotPatched(PortError):
    """`revert` on a tree lsync-port has not patched."""


class ManifestCorrupt(PortError):
    """The tree's manifest cannot be read, or names paths outside the tree."""


class TreeBusy(PortError):
    """Another apply or revert holds the tree's lock."""


class PackInvalid(PortError):
    """A file shipped under patches/ cannot be read as what it should be."""


class Refused(PortError):
    """A command stopped before changing anything, to keep the user's work."""


# What a failed write means, in words, and what the user can do about it.
_WRITE_FAILURES = {
    errno.ENOSPC: ("no space left on the device", "free some space and run it again"),
    errno.EDQUOT: ("disk quota exceeded", "free some space and run it again"),
    errno.EACCES: ("permission denied", "make the tree writable for this user and run it again"),
    errno.EPERM: ("permission denied", "make the tree writable for this user and run it again"),
    errno.EROFS: (
        "read-only file system",
        "copy the tree somewhere writable (or remount it read-write) and run it again",
    ),
}


class WriteFailed(PortError):
    """The file system refused a write. `changed` tells whether any file of the tree had changed."""

    def __init__(self, error: OSError, command: str, changed: bool) -> None:
        what, todo = _WRITE_FAILURES.get(error.errno or 0, (error.strerror or str(error), "fix that and run it again"))
        where = f"{error.filename}: " if error.filename else ""
        if changed:
            outcome = (
                "some files are patched, the rest are untouched (none half-written); "
                f"`lsync-port {command}` again finishes the job once you {todo.removesuffix(' and run it again')}"
            )
        else:
            outcome = f"nothing was changed; {todo}"
        super().__init__(f"{command}: {where}{what}. {outcome[0].upper()}{outcome[1:]}.")
        self.error, self.changed = error, changed
