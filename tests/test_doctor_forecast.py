"""doctor's "memory" check reads the memory forecast: the one shipped for the release (measured
on the real release with `lsync-port forecast`), or a live one with --forecast.

Facts are made by hand, as in test_doctor.py: a Mac is faked, nothing runs on one.
"""

from __future__ import annotations

import json

from test_doctor import GIB, cuda_facts, expect, linux_facts, mac_facts, put, with_tree
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.cli.exits import Exit
from latentsync_mps.features.doctor import checks
from latentsync_mps.features.doctor.verdicts import BLOCKER, OK, WARNING
from latentsync_mps.pack.forecast_tables import measured, pick

runner = CliRunner()


def shipped(release="1.6") -> dict:
    forecast = measured(release)
    assert forecast is not None, f"no forecast shipped for {release}"
    return forecast | {"source": "shipped"}


def mac(recommended_gib: float, dtype="float16", release="1.6", resolution=512, **env) -> dict:
    facts = with_tree(mac_facts())
    put(facts, "tree.release", release)
    put(facts, "tree.status", {"patched": True})
    put(facts, "probe.memory.total", int(recommended_gib * 1.5 * GIB))
    put(facts, "probe.torch.mps_recommended_max_memory", int(recommended_gib * GIB))
    put(facts, "probe.helper.dtype", dtype)
    put(facts, "resolution", {"value": resolution, "source": "test"})
    put(facts, "probe.env", dict(env))
    facts["forecast"] = shipped(release)
    return facts


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def test_every_measured_release_has_every_configuration():
    for release, resolution in (("1.5", 256), ("1.6", 512), ("main", 512)):
        forecast = shipped(release)
        assert forecast["resolution"] == resolution and forecast["frames"] == 16
        for device, dtype, chunking in (("cuda", "float16", None), ("mps", "float32", True), ("mps", "float16", False)):
            row = pick(forecast, device, dtype, bool(chunking))
            assert row is not None and row["peak_bytes"] > row["largest_buffer_bytes"] > 0


def test_bfloat16_is_forecast_with_float16s_row():
    """bfloat16 has float16's sizes: it gets the float16 row (neither none, nor float32's twice as big)."""
    for chunking in (True, False):
        row = pick(shipped(), "mps", "bfloat16", chunking)
        assert row is not None and row == pick(shipped(), "mps", "float16", chunking)
        assert row["dtype"] == "float16" and row["chunking"] is chunking
    assert pick(shipped(), "cuda", "bfloat16", False) == pick(shipped(), "cuda", "float16", False)
    result = expect(checks.check_memory, mac(recommended_gib=1000, dtype="bfloat16"), OK)
    assert gib(pick(shipped(), "mps", "float16", True)["peak_bytes"]) in result.detail


def test_a_mac_whose_working_set_holds_the_forecast_peak_is_ok():
    row = pick(shipped(), "mps", "float16", True)
    facts = mac(recommended_gib=row["peak_bytes"] / GIB + 1)
    expect(checks.check_memory, facts, OK, f"at least {gib(row['peak_bytes'])}", "mps float16, chunking on", "1.6")


def test_float32_needs_more_than_the_same_mac_has_in_float16():
    f16, f32 = pick(shipped(), "mps", "float16", True), pick(shipped(), "mps", "float32", True)
    between = (f16["peak_bytes"] + f32["peak_bytes"]) / 2 / GIB
    expect(checks.check_memory, mac(between, dtype="float16"), OK)
    result = expect(checks.check_memory, mac(between, dtype="float32"), WARNING, "expect swapping")
    assert gib(f32["peak_bytes"]) in result.detail


def test_beyond_the_mps_cap_is_a_blocker():
    f32 = pick(shipped(), "mps", "float32", True)
    facts = mac(f32["peak_bytes"] / GIB / 2, dtype="float32")  # the cap is 1.7 x the working set
    expect(checks.check_memory, facts, BLOCKER, "MPS backend out of memory")


def test_chunking_off_on_mps_hits_metals_buffer_limit():
    facts = mac(100, dtype="float32", LATENTSYNC_MPS_CHUNKING="0")
    row = pick(shipped(), "mps", "float32", False)
    expect(checks.check_memory, facts, BLOCKER, "2**32-byte limit", gib(row["largest_buffer_bytes"]), "chunking off")


def test_an_unported_tree_runs_unchunked():
    facts = put(mac(100, dtype="float32"), "tree.status", {"patched": False})
    expect(checks.check_memory, facts, BLOCKER, "2**32-byte limit", "lsync-port apply")


def test_release_15_at_256():
    row = pick(shipped("1.5"), "mps", "float16", True)
    facts = mac(row["peak_bytes"] / GIB + 0.5, release="1.5", resolution=256)
    expect(checks.check_memory, facts, OK, f"at least {gib(row['peak_bytes'])}", "LatentSync 1.5")


def test_another_resolution_falls_back_to_the_readme_figure_and_says_how_to_measure():
    facts = mac(20, resolution=384)
    expect(checks.check_memory, facts, OK, "estimate", "--forecast")


def test_cuda_uses_the_cuda_row():
    facts = put(cuda_facts(), "forecast", shipped())
    put(facts, "resolution", {"value": 512, "source": "test"})
    row = pick(shipped(), "cuda", "float16", False)
    expect(checks.check_memory, facts, OK, f"at least {gib(row['peak_bytes'])}", "cuda float16")


def test_the_cpu_keeps_the_ram_estimate():
    facts = put(linux_facts(), "forecast", shipped())
    expect(checks.check_memory, facts, OK, "for inference on the CPU", "estimate")


def test_a_failed_live_forecast_is_said_and_the_estimate_used():
    facts = mac(20)
    facts["forecast"] = {"source": "live", "error": "building the models failed: ImportError: einops"}
    expect(checks.check_memory, facts, OK, "estimate", "live forecast failed", "einops")


def test_doctor_on_the_fixture_reads_the_shipped_forecast(fixture_tree):
    result = runner.invoke(app, ["doctor", str(fixture_tree), "--json", "--resolution", "512"])
    facts = json.loads(result.output)["facts"]
    assert facts["forecast"]["source"] == "shipped" and facts["forecast"]["release"] == "1.6"


def test_forecast_option_needs_a_tree():
    result = runner.invoke(app, ["doctor", "--forecast"])
    assert result.exit_code == Exit.USAGE and "--forecast needs TREE" in result.output


def test_the_shipped_figures_are_the_real_release_measured_with_the_port():
    forecast = shipped()
    assert forecast["config"] == "configs/unet/stage2_512.yaml"
    chunked, unchunked = pick(forecast, "mps", "float16", True), pick(forecast, "mps", "float16", False)
    assert chunked["largest_buffer_bytes"] < unchunked["largest_buffer_bytes"]


def test_doctor_forecast_runs_a_live_forecast_of_the_tree(fixture_tree, monkeypatch):
    """--forecast: the figures come from `run_forecast` on this tree (faked here: the real one is
    tests/test_forecast.py's), at doctor's resolution, and the check says they are live."""
    import latentsync_mps.features.forecast as forecast_module
    from latentsync_mps.features.forecast import Configuration, ForecastReport

    calls = []

    def fake_run_forecast(tree, pack, python=None, resolution=None, **kwargs):
        calls.append((tree, resolution))
        rows = [Configuration("mps", "float16", True, "pass", 3 * GIB, GIB // 2, "cat", GIB)]
        return ForecastReport(
            str(tree), "1.6", python, "2.14.1", "configs/unet/stage2.yaml", 16, resolution, 2, True, rows, 1.0
        )

    monkeypatch.setattr(forecast_module, "run_forecast", fake_run_forecast)
    result = runner.invoke(app, ["doctor", str(fixture_tree), "--json", "--forecast", "--resolution", "320"])
    report = json.loads(result.output)
    assert calls == [(fixture_tree.resolve(), 320)]
    assert report["facts"]["forecast"]["source"] == "live"


def test_a_live_forecast_is_named_as_such():
    facts = mac(20)
    facts["forecast"]["source"] = "live"
    expect(checks.check_memory, facts, OK, "live `lsync-port forecast` of this tree")


def test_the_memory_row_says_about_how_long_a_chunk_takes_on_this_mac():
    from latentsync_mps.pack.apple_chips import chunk_estimate, find_chip, load_chips
    from latentsync_mps.pack.forecast_tables import load_cpu_parts

    row = pick(shipped(), "mps", "float16", True)
    facts = mac(recommended_gib=row["peak_bytes"] / GIB + 1)
    put(facts, "probe.platform.chip", "Apple M3 Pro")
    seconds = chunk_estimate(row["work"], find_chip("M3 Pro", load_chips()), "float16", 16, load_cpu_parts())["seconds"]
    result = expect(
        checks.check_memory, facts, OK, f"about {seconds:.0f} s per 16-frame chunk on this Mac (Apple M3 Pro"
    )
    assert "roofline estimate" in result.detail
    put(facts, "probe.platform.chip", "Apple M7 Hyper")
    expect(checks.check_memory, facts, OK, "unknown chip 'Apple M7 Hyper'", "M4 Max")
    put(facts, "probe.platform.chip", None)
    expect(checks.check_memory, facts, OK, "no Apple chip detected here, so no estimate")
