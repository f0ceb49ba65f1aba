"""The test set-up itself: the suite runs on the torch that scripts/test.sh pins, in CI as locally."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REQUIRE_EXTRAS

REPO = Path(__file__).resolve().parent.parent
TEST_SH = REPO / "scripts" / "test.sh"
CI = REPO / ".github" / "workflows" / "ci.yml"


def pinned_torch() -> str:
    found = re.findall(r'^TORCH_PIN="([^"]+)"$', TEST_SH.read_text(), flags=re.M)
    assert len(found) == 1, "scripts/test.sh names one torch pin"
    return found[0]


def test_the_suite_runs_on_the_pinned_torch():
    torch = pytest.importorskip("torch", reason="the pinned torch comes with the verify extra's set-up")
    here = torch.__version__.split("+")[0]
    if here != pinned_torch() and not REQUIRE_EXTRAS:  # a hand-made environment: say so, do not fail
        pytest.skip(f"torch {here} here, the suite's expectations are for torch {pinned_torch()}")
    assert here == pinned_torch(), "scripts/test.sh installs the pin: this environment is not its"


def test_ci_gets_torch_only_from_scripts_test_sh():
    workflow = CI.read_text()
    assert "bash scripts/test.sh" in workflow
    assert not re.search(r"pip install[^\n]*\btorch\b", workflow), "CI would install a torch of its own"
    assert "LSYNC_PORT_TORCH_INDEX: https://download.pytorch.org/whl/cpu" in workflow
