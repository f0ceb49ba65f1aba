"""Stalls of the simulated device, counted per denoising step and for the rest of the pipeline.

What slows an MPS run most is often not arithmetic but the host waiting for the GPU, or the GPU for
the host. The simulator sees every such event and hands it here, with the op and the call site:

* readback: a value read back to the host. `aten::_local_scalar_dense` (`.item()`, `float(t)`,
  `int(t)`, `bool(t)`, `if t.any():`), `tolist()`, and ops whose output size depends on the data
  (`nonzero`, `masked_select`, `unique`, a boolean-mask index), which MPS answers only after it has
  run the queue;
* copy: a device<->host copy, with its direction and bytes (`.cpu()`, `.to("mps")`, `copy_` between
  devices, `torch.tensor(..., device="mps")`). A copy to the host waits for the queue; one to the
  device is a blit. Copies made by the port's runtime helper (`_lsync_port.py`: a CPU detour it
  takes on purpose) say so (`port: true`);
* cpu: an op that runs on the CPU because the target torch has no MPS kernel for it (the fallback
  of `PYTORCH_ENABLE_MPS_FALLBACK=1`, or MPS's own boxed fallback): two copies and a sync each time.

A denoising step is recognised by the pipeline's scheduler: the verify harness calls `loop_begin`
when the pipeline calls `scheduler.scale_model_input` or its UNet, and `step_done` when
`scheduler.step` returns. A step runs from the end of the previous one (or, for a chunk's first, from
that first call) to the return of its `scheduler.step`; after as many steps as the scheduler has
timesteps, the chunk's loop is over and what follows counts as the rest of the pipeline. Imports
nothing but the standard library: it runs inside the tree's interpreter with the simulator.
"""

from __future__ import annotations

import contextlib
import functools

READBACK = "readback"
COPY = "copy"
CPU = "cpu"
KINDS = (READBACK, COPY, CPU)
LOOP = "loop"
OUTSIDE = "outside"
TO_HOST = "to host"
TO_DEVICE = "to device"
# Where the port's runtime helper is written in a ported tree (runtime/_lsync_port.py).
PORT_HELPER = "_lsync_port.py"

RECOGNISED_BY = (
    "the pipeline's scheduler: a step ends when scheduler.step returns, and starts where the previous one "
    "ended (a chunk's first: at its first scheduler.scale_model_input or UNet call)"
)


def _empty() -> dict:
    return {"readbacks": 0, "copies": 0, "copy_bytes": 0, "cpu_ops": 0}


_TOTAL_KEY = {READBACK: "readbacks", COPY: "copies", CPU: "cpu_ops"}


class StallCounter:
    """The stalls of one run, by (phase, kind, op, site, direction), and per denoising step."""

    def __init__(self) -> None:
        self.entries: dict[tuple, dict] = {}
        self.step: int | None = None  # the running step's number over the whole run, None outside the loop
        self.steps = 0  # steps completed
        self.chunks = 0  # denoising loops completed
        self.in_chunk = 0  # steps completed in the running loop
        self.per_step: list[dict] = []

    # -- the loop, as the harness sees the pipeline call its scheduler and UNet --------------------

    def loop_begin(self) -> None:
        if self.step is None:
            self._open()

    def step_done(self, steps_per_loop: int) -> None:
        if self.step is None:  # scheduler.step with nothing before it that we saw: the step is this call
            self._open()
        self.steps += 1
        self.in_chunk += 1
        self.step = None
        if self.in_chunk >= max(1, steps_per_loop):
            self.chunks += 1
            self.in_chunk = 0
        else:
            self._open()  # the loop goes on: what follows belongs to the next step

    def _open(self) -> None:
        self.step = len(self.per_step)
        self.per_step.append({"step": self.step, "chunk": self.chunks, "in_chunk": self.in_chunk, **_empty()})

    # -- events -----------------------------------------------------------------------------------

    def add(
        self,
        kind: str,
        op: str,
        site: str,
        function: str,
        nbytes: int = 0,
        direction: str | None = None,
        via: str | None = None,
    ) -> None:
        phase = OUTSIDE if self.step is None else LOOP
        key = (phase, kind, op, site, direction)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = {
                "phase": phase,
                "kind": kind,
                "op": op,
                "site": site,
                "function": function,
                "direction": direction,
                "via": via,  # the library frame below the site, if the stall is inside a library
                "port": site.split(":", 1)[0].endswith(PORT_HELPER),
                "count": 0,
                "bytes": 0,
                "_steps": set(),
            }
        entry["count"] += 1
        entry["bytes"] += nbytes
        if self.step is not None:
            entry["_steps"].add(self.step)
            row = self.per_step[self.step]
            row[_TOTAL_KEY[kind]] += 1
            if kind == COPY:
                row["copy_bytes"] += nbytes

    # -- the summary (verify --json: simulator.stalls) ----------------------------------------------

    def summary(self) -> dict:
        totals = {LOOP: _empty(), OUTSIDE: _empty()}
        sites = []
        for entry in self.entries.values():
            total = totals[entry["phase"]]
            total[_TOTAL_KEY[entry["kind"]]] += entry["count"]
            if entry["kind"] == COPY:
                total["copy_bytes"] += entry["bytes"]
            row = {k: v for k, v in entry.items() if not k.startswith("_")}
            if entry["phase"] == LOOP:
                row["steps"] = len(entry["_steps"])
                row["per_step"] = round(entry["count"] / self.steps, 3) if self.steps else None
            sites.append(row)
        sites.sort(key=lambda r: (r["phase"] != LOOP, r["site"], r["kind"], r["op"], r["direction"] or ""))
        steps = self.steps
        per_step = {k: round(v / steps, 3) for k, v in totals[LOOP].items()} if steps else None
        return {
            "denoising_steps": steps,
            "denoising_loops": self.chunks,
            "recognised_by": RECOGNISED_BY,
            "in_loop": totals[LOOP],
            "in_loop_per_step": per_step,
            "outside_loop": totals[OUTSIDE],
            "by_step": [dict(row) for row in self.per_step],
            "sites": sites,
        }


def _steps_per_loop(scheduler) -> int:
    timesteps = getattr(scheduler, "timesteps", None)  # a tensor: len() reads its shape, not its values
    return len(timesteps) if timesteps is not None else 0


@contextlib.contextmanager
def watching(counter: StallCounter, pipeline):
    """Tell `counter` where the pipeline's denoising steps are while the block runs: its scheduler's
    `scale_model_input` and UNet forward begin a step, `scheduler.step` ends one. Patched on the
    instances only, and taken off again at the end."""
    undo = []
    scheduler = getattr(pipeline, "scheduler", None)
    unet = getattr(pipeline, "unet", None) or getattr(pipeline, "denoising_unet", None)

    def wrap(name, before, after=None):
        original = getattr(scheduler, name, None)
        if original is None:
            return

        @functools.wraps(original)  # inspect.signature(scheduler.step) still sees eta and generator
        def wrapper(*args, **kwargs):
            before()
            try:
                return original(*args, **kwargs)
            finally:
                if after is not None:
                    after()

        setattr(scheduler, name, wrapper)
        undo.append(lambda: vars(scheduler).pop(name, None))

    if scheduler is not None:
        wrap("scale_model_input", counter.loop_begin)
        wrap("step", counter.loop_begin, lambda: counter.step_done(_steps_per_loop(scheduler)))
    if unet is not None and hasattr(unet, "register_forward_pre_hook"):
        handle = unet.register_forward_pre_hook(lambda module, args: counter.loop_begin())
        undo.append(handle.remove)
    try:
        yield counter
    finally:
        for step in reversed(undo):
            step()


@contextlib.contextmanager
def watching_class(counter: StallCounter, scheduler_class):
    """`watching` for a pipeline that verify does not build itself (a ComfyUI node runs its own):
    the scheduler class's `scale_model_input` begins a step and its `step` ends one, for every
    instance, while the block runs."""
    originals = {name: vars(scheduler_class).get(name) for name in ("scale_model_input", "step")}

    def wrap(original, after):
        @functools.wraps(original)
        def wrapper(self, *args, **kwargs):
            counter.loop_begin()
            try:
                return original(self, *args, **kwargs)
            finally:
                if after:
                    counter.step_done(_steps_per_loop(self))

        return wrapper

    for name, original in originals.items():
        if original is not None:
            setattr(scheduler_class, name, wrap(original, name == "step"))
    try:
        yield counter
    finally:
        for name, original in originals.items():
            if original is not None:
                setattr(scheduler_class, name, original)
