"""Stalls counted by the MPS simulator (issue 22): reads back to the host, device<->host copies and
CPU round trips, per denoising step and for the rest of the pipeline, each at its call site.

The counter on its own (no torch), then `verify --device mps-sim` on the ported fixture: clean, its
denoising loop has none (the rule mps-host-timesteps removed DDIM's reads back); with stalls
injected inside the loop, each is reported at its file:line, per step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentsync_mps.payload.mpssim.stalls import COPY, CPU, READBACK, TO_HOST, StallCounter

runner = CliRunner()
PIPELINE = "latentsync/pipelines/lipsync_pipeline.py"


# ----------------------------------------------------------------------------------------------
# The counter


def test_steps_are_told_apart_and_what_follows_the_last_is_outside():
    counter = StallCounter()
    counter.add(COPY, "aten::_to_copy", "a.py:1", "load", 100, TO_HOST)  # before the loop
    for _chunk in range(2):
        counter.loop_begin()
        counter.add(READBACK, "aten::_local_scalar_dense", "p.py:9", "__call__", 4)
        counter.step_done(steps_per_loop=2)
        # between scheduler.step and the next UNet call: still the loop, the next step
        counter.add(CPU, "aten::linalg_eig", "p.py:7", "__call__")
        counter.loop_begin()
        counter.step_done(steps_per_loop=2)
        counter.add(READBACK, "Tensor.tolist", "p.py:20", "__call__", 8)  # after the loop: outside
    summary = counter.summary()
    assert (summary["denoising_steps"], summary["denoising_loops"]) == (4, 2)
    assert summary["in_loop"] == {"readbacks": 2, "copies": 0, "copy_bytes": 0, "cpu_ops": 2}
    assert summary["in_loop_per_step"] == {"readbacks": 0.5, "copies": 0.0, "copy_bytes": 0.0, "cpu_ops": 0.5}
    assert summary["outside_loop"] == {"readbacks": 2, "copies": 1, "copy_bytes": 100, "cpu_ops": 0}
    assert [(s["chunk"], s["in_chunk"], s["readbacks"], s["cpu_ops"]) for s in summary["by_step"]] == [
        (0, 0, 1, 0),
        (0, 1, 0, 1),
        (1, 0, 1, 0),
        (1, 1, 0, 1),
    ]
    loop = {(s["site"], s["kind"]): s for s in summary["sites"] if s["phase"] == "loop"}
    assert loop[("p.py:9", READBACK)]["steps"] == 2 and loop[("p.py:9", READBACK)]["per_step"] == 0.5
    assert loop[("p.py:7", CPU)]["count"] == 2


def test_a_copy_in_the_port_helper_says_so():
    counter = StallCounter()
    counter.add(COPY, "aten::_to_copy", "latentsync/_lsync_port.py:801", "det", 16, TO_HOST)
    (site,) = counter.summary()["sites"]
    assert site["port"] and site["direction"] == TO_HOST and site["bytes"] == 16


# ----------------------------------------------------------------------------------------------
# verify --device mps-sim on the fixture


def _verify(tree: Path) -> dict:
    pytest.importorskip("torch", reason="the MPS simulator needs torch (verify extra)")
    pytest.importorskip("yaml", reason="the MPS simulator reads native_functions.yaml with pyyaml")
    import torch

    from latentsync_mps.cli import app
    from latentsync_mps.pack.target_torch import known_versions

    installed = torch.__version__.split("+")[0]
    if installed not in known_versions():
        pytest.skip(f"no shipped MPS table for the installed torch {installed}")
    result = runner.invoke(app, ["verify", str(tree), "--json", "--device", "mps-sim", "--target-torch", installed])
    report = json.loads(result.output)
    assert {c["name"]: c["status"] for c in report["checks"]}["pipeline"] == "pass", report["reason"]
    return report["simulator"]["stalls"]


@pytest.fixture
def ported(fixture_tree, pack):
    from latentsync_mps.port.planning import make_plan
    from latentsync_mps.port.transaction import commit

    commit(make_plan(fixture_tree, pack))
    return fixture_tree


def _line_of(tree: Path, text: str) -> str:
    lines = (tree / PIPELINE).read_text().splitlines()
    return f"{PIPELINE}:{next(i for i, line in enumerate(lines, 1) if text in line)}"


def test_the_ported_fixtures_denoising_loop_has_no_stalls(ported):
    stalls = _verify(ported)
    assert stalls["denoising_steps"] == 4 and stalls["denoising_loops"] == 2
    assert stalls["in_loop"] == {"readbacks": 0, "copies": 0, "copy_bytes": 0, "cpu_ops": 0}, stalls["sites"]
    # Outside the loop there are copies: the weights moved to the device.
    assert stalls["outside_loop"]["copies"] > 0


def test_stalls_inserted_in_the_loop_are_reported_at_their_site_per_step(ported):
    path = ported / PIPELINE
    text = path.read_text()
    unet_line = "noise_pred = self.unet(unet_input, t, encoder_hidden_states=audio_embeds).sample"
    assert unet_line in text and "_lsync_port.scheduler_step(self.scheduler, noise_pred, t," in text
    indent = text.split(unet_line)[0].rsplit("\n", 1)[1]
    text = text.replace(
        unet_line,
        f"{unet_line}\n{indent}stall_value = float(noise_pred.mean())  # injected: a read back\n"
        f"{indent}stall_copy = noise_pred.cpu()  # injected: a copy to the host",
    )
    # Without the rule's helper, DDIM's step reads the device timestep back (inside diffusers).
    text = text.replace(
        "_lsync_port.scheduler_step(self.scheduler, noise_pred, t,", "self.scheduler.step(noise_pred, t,"
    )
    path.write_text(text)
    readback_site, copy_site = _line_of(ported, "stall_value ="), _line_of(ported, "stall_copy =")
    step_site = _line_of(ported, "self.scheduler.step(noise_pred, t,")

    stalls = _verify(ported)
    steps = stalls["denoising_steps"]
    assert steps == 4
    loop = {(s["site"], s["kind"], s["op"]): s for s in stalls["sites"] if s["phase"] == "loop"}
    read = loop[(readback_site, READBACK, "aten::_local_scalar_dense")]
    assert (read["count"], read["steps"], read["per_step"]) == (steps, steps, 1.0)
    copy = loop[(copy_site, COPY, "aten::_to_copy")]
    assert copy["direction"] == TO_HOST and copy["count"] == steps and copy["bytes"] > 0
    ddim = loop[(step_site, READBACK, "aten::_local_scalar_dense")]
    assert "scheduling_ddim.py" in ddim["via"] and ddim["count"] >= steps
    assert stalls["in_loop"]["copies"] == steps and stalls["in_loop"]["copy_bytes"] == copy["bytes"]
    assert all(row["readbacks"] >= 2 and row["copies"] == 1 for row in stalls["by_step"])


def test_the_report_shows_the_loops_stalls_by_site():
    from rich.console import Console

    from latentsync_mps.features.verify.runner import VerifyReport
    from latentsync_mps.render.verify import render_stalls

    counter = StallCounter()
    counter.loop_begin()
    counter.add(READBACK, "aten::_local_scalar_dense", f"{PIPELINE}:77", "__call__", 4, via="diffusers/x.py:1 in step")
    counter.step_done(1)
    report = VerifyReport(
        tree="t",
        device="mps-sim",
        python="p",
        weights="synthetic",
        checks=[],
        passed=True,
        reason="",
        seconds=1.0,
        simulator={"stalls": counter.summary()},
    )
    console = Console(record=True, width=200)
    render_stalls(console, report)
    text = console.export_text()
    assert "Stalls in the denoising loop (1 steps in 1 loop(s)): 1 read(s) back to the host" in text
    assert f"{PIPELINE}:77 in __call__ (inside diffusers/x.py:1 in step)" in text


def test_a_real_release_has_no_stalls_in_its_denoising_loop(tmp_path, pack):
    """Opt-in (LSYNC_UPSTREAM, LSYNC_UPSTREAM_PYTHON): a real 1.6-or-later checkout, ported, judged
    against its own target torch; the fixture tests above cover the same counting."""
    import shutil

    from conftest import real_latentsync_16

    from latentsync_mps.cli import app
    from latentsync_mps.port.planning import make_plan
    from latentsync_mps.port.transaction import commit

    real = real_latentsync_16()
    if real is None:
        pytest.skip("set LSYNC_UPSTREAM to real checkouts to run this")
    source, python = real
    tree = tmp_path / "latentsync"
    shutil.copytree(source, tree, ignore=shutil.ignore_patterns(".git", "checkpoints"))
    commit(make_plan(tree, pack))
    result = runner.invoke(
        app, ["verify", str(tree), "--json", "--device", "mps-sim", "--python", python, "--timeout", "2400"]
    )
    report = json.loads(result.output)
    assert report["passed"], report["reason"]
    stalls = report["simulator"]["stalls"]
    assert stalls["denoising_steps"] > 0
    assert stalls["in_loop"] == {"readbacks": 0, "copies": 0, "copy_bytes": 0, "cpu_ops": 0}, stalls["sites"]
