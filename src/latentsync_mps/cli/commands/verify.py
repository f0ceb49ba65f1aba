"""`lsync-port verify`: smoke inference on a device, and a plain verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from latentsync_mps.cli.app import JsonOpt, StackOpt, TreeArg
from latentsync_mps.cli.console import console
from latentsync_mps.cli.exits import Exit, engine_call, exit_codes_named, fail
from latentsync_mps.cli.inputs import check_needs, interpreter, load_pack

ORDER = 60  # its place in `lsync-port --help`


DEVICES = ("auto", "mps", "cuda", "cpu", "mps-sim")
WEIGHTS = ("auto", "synthetic", "real")


def verify(
    tree: TreeArg,
    device: Annotated[
        str,
        typer.Option(
            "--device",
            help="auto (mps > cuda > cpu), mps, cuda, cpu, or mps-sim: the MPS code path simulated on the CPU, "
            "every op checked against this torch's MPS kernels (float64, CPU tensors mixed in, generators).",
        ),
    ] = "auto",
    weights: Annotated[
        str,
        typer.Option(
            "--weights",
            help="synthetic: tiny random checkpoints built from the tree's configs (default when checkpoints/ "
            "is missing); real: the tree's checkpoints/ and real face detection.",
        ),
    ] = "auto",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Denoising steps.")] = 2,
    frames: Annotated[int, typer.Option("--frames", min=1, help="Frames in the test clip.")] = 8,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds before the child is killed.")] = 600,
    python: Annotated[
        str | None,
        typer.Option("--python", help="Interpreter that has the tree's dependencies (default: this one)."),
    ] = None,
    target_torch: Annotated[
        str | None,
        typer.Option(
            "--target-torch",
            help="mps-sim only: judge against this torch release's MPS kernels (X.Y.Z, one of the shipped "
            "tables) instead of the torch TREE's requirements install on a Mac (the default; no pin: the newest "
            "known release).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for report.json and preview.png, a contact sheet of input and output frames and "
            "mouths (default: a folder per tree and device under the system's temp folder).",
        ),
    ] = None,
    fresh_reference: Annotated[
        bool,
        typer.Option(
            "--fresh-reference",
            help="Off cpu: run the CPU float32 reference for the parity check again, even when an earlier "
            "`verify --device cpu` of the same tree and inputs left its output (by default that output is "
            "reused, and the report says so).",
        ),
    ] = False,
    stack: StackOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run smoke inference with TREE's own code on a device and say plainly whether it works.

    The tree's code runs in a child process, from the tree's root, under --timeout: device check,
    imports, video decoding (decord), audio features, a UNet forward pass, a short denoising run
    writing a video, output sanity (frames, fps, finite, mouth not black) and, off cpu, parity with
    a CPU float32 run. Exit {Exit.OK} when every check passes, {Exit.VERIFY_FAILED} when one fails.

    --device mps-sim runs the same checks on a simulated MPS device (no Mac needed): the tree sees
    mps, computes on the CPU, and every op on the device is checked against the MPS rules of the
    target torch: the one TREE's requirements install on macOS arm64 (e.g. torch==2.5.1), or
    --target-torch. An error finding (op without MPS kernel in that torch, an op x dtype it does not
    implement, a known Metal numerics defect, float64, a CPU tensor mixed in, a CPU generator drawing
    on mps, one buffer over 2**32 bytes) fails verify, listed by call site in the tree.
    """
    from latentsync_mps.render import verify as render

    if device not in DEVICES:
        raise fail(f"--device must be one of {', '.join(DEVICES)}, not {device!r}", Exit.USAGE)
    if weights not in WEIGHTS:
        raise fail(f"--weights must be one of {', '.join(WEIGHTS)}, not {weights!r}", Exit.USAGE)
    python = interpreter(python)
    if target_torch is not None and device != "mps-sim":
        raise fail("--target-torch applies to --device mps-sim only", Exit.USAGE)
    check_needs("verify --device mps-sim" if device == "mps-sim" else "verify", tree, python, Exit.VERIFY_FAILED)
    from latentsync_mps.features.verify.runner import run_verify

    pack = load_pack()
    with render.progress(console, enabled=not json_out) as on_event:
        report = engine_call(
            run_verify,
            tree,
            pack,
            device,
            weights,
            steps,
            frames,
            timeout,
            python,
            on_event=on_event,
            target_torch=target_torch,
            out_dir=out,
            reuse_reference=not fresh_reference,
            stack=stack,
        )
    if json_out:
        print(json.dumps(report.to_json(), indent=2))
    else:
        render.render_report(console, report)
    if not report.passed:
        raise typer.Exit(int(Exit.VERIFY_FAILED))


def register(app: typer.Typer) -> None:
    app.command()(exit_codes_named(verify))
