"""The border between lsync-port and a child it runs in the tree's interpreter: the spec the parent
hands over, the events the child writes back, and the one way the child's modules load each other.

Stdlib only, and as old a Python as the harness: the child runs under the tree's interpreter, which
need not have lsync-port installed. The host imports this module normally; the child loads it by
path (an entry script's few first lines: the one module that cannot load itself) and every other
sibling through `load_sibling`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class Spec:
    """What the parent hands the child (as JSON, the child script's one argument). verify's harness
    and forecast's child read the fields their runs need; the rest keep their defaults."""

    tree: str
    work: str = ""
    events: str = ""  # the event stream's file: one JSON line per event (CheckStart, CheckEnd, Findings)
    device: str = "cpu"  # "auto" until the harness resolves it; forecast's child sets "meta"
    config: str = ""  # the tree's UNet config, relative to the tree
    frames: int = 0
    steps: int = 0
    resolution: int | None = None  # None: the config's
    runtime_module: str = ""
    # What the release is like at run time (patches/upstreams.toml): the child reads no lsync-port data.
    release_facts: dict[str, Any] | None = None
    # verify
    simulate: str | None = None  # "mps": --device mps-sim
    weights: str = "synthetic"
    seed: int = 0
    modules: list[str] = dataclasses.field(default_factory=list)
    cache: str = ""  # the synthetic weights' cache folder
    min_psnr: float = 0.0
    comfy: bool = False  # a ComfyUI node package: its nodes run too
    release: str | None = None
    preview: str | None = None  # where the contact sheet goes
    # Parity off cpu: reuse, folder, tree_digest, tool_version of the CPU float32 reference.
    reference: dict[str, Any] | None = None
    stack: dict[str, Any] | None = None  # the host stack modelled (stacks.Stack.child_model)
    mps_table: str | None = None  # --device mps-sim: the target torch's MPS table file
    target_torch: dict[str, Any] | None = None
    # forecast
    inference_steps: int = 0
    guidance_scale: float = 0.0
    vae: dict[str, Any] = dataclasses.field(default_factory=dict)
    whisper: dict[str, Any] = dataclasses.field(default_factory=dict)
    stand_ins: list[str] = dataclasses.field(default_factory=list)
    configurations: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spec:
        return cls(**data)

    @classmethod
    def read(cls, path: str) -> Spec:
        return cls.from_json(json.loads(Path(path).read_text()))


@dataclasses.dataclass
class CheckStart:
    check: str
    event: str = "start"


@dataclasses.dataclass
class CheckEnd:
    check: str
    status: str  # pass | fail | skip
    seconds: float
    detail: str
    peak_memory: int | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    event: str = "end"


@dataclasses.dataclass
class Findings:
    """--device mps-sim: the simulator's findings so far (cumulative: the last one has them all)."""

    findings: list[dict[str, Any]]
    stats: dict[str, Any]
    event: str = "findings"


EVENT_TYPES = {"start": CheckStart, "end": CheckEnd, "findings": Findings}


def write_event(events: str, record) -> None:
    """Append one event to the stream, synced: a child killed right after still leaves it."""
    with open(events, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(event_json(record)) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def event_json(record) -> dict[str, Any]:
    """The record as its JSON line's object, in the order the stream has always had."""
    data = dataclasses.asdict(record)
    return {"event": data.pop("event"), **data}


def read_event(line: str):
    data = json.loads(line)
    return EVENT_TYPES[data.pop("event")](**data)


SIBLING_PREFIX = "lsync_port_"  # a sibling loaded by path is `lsync_port_<file stem>`
PROTOCOL_NAME = SIBLING_PREFIX + "protocol"  # this module's name in the child


def load_sibling(path: Path | str):
    """The module (or package folder) at `path`, loaded by path as `lsync_port_<its name>` and kept in
    sys.modules: the child's modules find each other this way, lsync-port not being importable
    there. Loaded once: a second call returns the first module."""
    # The siblings find this module under one name, however it was loaded itself (by path in the
    # child; as lsync-port's own where the host or a test imports a sibling).
    sys.modules.setdefault(PROTOCOL_NAME, sys.modules[__name__])
    path = Path(path)
    name = SIBLING_PREFIX + path.stem
    if name in sys.modules:
        return sys.modules[name]
    if path.is_dir():
        module_spec = importlib.util.spec_from_file_location(
            name, path / "__init__.py", submodule_search_locations=[str(path)]
        )
    else:
        module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before it runs: its own imports of siblings may come back to it
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
