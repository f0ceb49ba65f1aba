"""Write the command transcripts of README.md and docs/usage.md from a real run.

    python scripts/gen_transcripts.py           # run the commands, rewrite the marked blocks
    python scripts/gen_transcripts.py --check   # exit 1, naming each stale block; writes nothing

Each block between `<!-- transcript:NAME:start ... -->` and `<!-- transcript:NAME:end -->` is the
output of `lsync-port` run now, on a copy of the built-in example tree (the one `demo` ports),
from a temporary folder (whose path is cut from the output) so that the tree is called
`latentsync`, at 100 columns in a pipe (no colour). A rule added to patches/ changes these
outputs: run this after. tests/test_transcripts.py fails when a block is stale.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFRESH = "python scripts/gen_transcripts.py"
COLUMNS = "100"
BLOCK = re.compile(
    r"(<!-- transcript:(?P<name>[\w-]+):start[^>]*-->\n)(?P<body>.*?)(<!-- transcript:(?P=name):end -->)", re.S
)


def lsync_port(folder: Path, *args: str) -> str:
    """`lsync-port ARGS` as a user runs it in `folder`, its stdout as a pipe gives it."""
    environment = {**os.environ, "COLUMNS": COLUMNS, "NO_COLOR": "1"}
    for name in ("LATENTSYNC_DEVICE", "LATENTSYNC_DTYPE", "LSYNC_PORT_PATCHES"):
        environment.pop(name, None)
    environment["LSYNC_PORT_PATCHES"] = str(REPO / "patches")  # this checkout's rules, not an installed copy
    done = subprocess.run(
        [sys.executable, "-m", "latentsync_mps.cli", *args],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"lsync-port {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    # lsync-port names a tree by its absolute path: here, the temporary folder's, written as the
    # relative path the command was given, so that the text does not change from run to run.
    text = done.stdout.replace(str(folder.resolve()) + os.sep, "").replace(str(folder) + os.sep, "")
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def _fenced(command: str, output: str) -> str:
    return f"```\n$ {command}\n{output}```\n"


def _without_table(output: str, title: str, note: str) -> str:
    """The output with one table (its title line and rows) replaced by a line that says so."""
    lines = output.splitlines(keepends=True)
    start = lines.index(title + "\n")
    end = start + 1
    while end < len(lines) and (lines[end].startswith(" ") or lines[end].startswith("━")):
        end += 1
    return "".join([*lines[:start], f"{title}\n  ... {note}\n", *lines[end:]])


def demo(folder: Path) -> str:
    output = lsync_port(folder, "demo", "latentsync")
    rows = len(re.findall(r"^ \S+ +│ [\w-]+ +│ +\d+ │", output, re.M))
    trimmed = _without_table(output, "Matches per rule", f"(one row per rule: {rows} rows, its kind, matches, drift)")
    return _fenced("lsync-port demo latentsync", trimmed)


def apply(folder: Path) -> str:
    shutil.copytree(_example_tree(), folder / "latentsync")
    return _fenced("lsync-port apply latentsync", lsync_port(folder, "apply", "latentsync"))


def scan(folder: Path) -> str:
    shutil.copytree(_example_tree(), folder / "latentsync")
    lines = lsync_port(folder, "scan", "latentsync").splitlines(keepends=True)
    return _fenced("lsync-port scan latentsync", "".join(lines[:12]) + "...\n")


def _example_tree() -> Path:
    from latentsync_mps.pack.paths import example_tree

    return example_tree()


# Block name -> how its text is made. Each runs in a folder of its own.
TRANSCRIPTS: dict[str, Callable[[Path], str]] = {"demo": demo, "apply": apply, "scan": scan}
PAGES = [REPO / "README.md", REPO / "docs" / "usage.md"]


def render(text: str, made: dict[str, str]) -> str:
    return BLOCK.sub(lambda m: m.group(1) + made[m.group("name")] + m.group(4), text)


def make() -> dict[str, str]:
    made = {}
    for name, function in TRANSCRIPTS.items():
        with tempfile.TemporaryDirectory(prefix="lsync-transcript-") as folder:
            made[name] = function(Path(folder))
    return made


def stale_blocks(made: dict[str, str]) -> list[str]:
    stale = []
    for page in PAGES:
        for match in BLOCK.finditer(page.read_text()):
            if match.group("name") not in made:
                raise SystemExit(f"{page}: no transcript called {match.group('name')!r} (known: {', '.join(made)})")
            if match.group("body") != made[match.group("name")]:
                stale.append(f"{page.relative_to(REPO)}: transcript {match.group('name')}")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 naming each stale block; write nothing")
    args = parser.parse_args(argv)
    made = make()
    stale = stale_blocks(made)
    if args.check:
        for block in stale:
            print(f"{block} is stale; refresh it with `{REFRESH}`")
        return 1 if stale else 0
    for page in PAGES:
        text = page.read_text()
        new = render(text, made)
        if new != text:
            page.write_text(new)
            print(f"wrote {page.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
