"""Rule order is data (patches/order.toml): kinds run group by group, and rule files' order
decides within a group."""

from __future__ import annotations

from latentsync_mps.pack.paths import patches_dir
from latentsync_mps.pack.ruleset import ORDER_FILE, KindOrder
from latentsync_mps.port.rulepack import load

PACK = load(patches_dir())


def test_kinds_run_in_the_order_the_pack_gives():
    for profile in PACK.profiles.values():
        kinds = profile.kinds()
        ranks = [k.rank for k in kinds]
        assert ranks == sorted(ranks)
        assert [k.rank for k in kinds] == [profile.kind_order.rank(k.rule.kind) for k in kinds]
        names = [k.rule.kind for k in kinds]
        # Composite patterns see the code before single-call mappings rewrite its parts.
        assert names.index("replace-statement") < names.index("torch-cuda-call") < names.index("device-literal")


def test_a_kind_not_named_runs_with_the_star_group():
    order = KindOrder((("a",), ("b", "*"), ("c",)))
    assert [order.rank(k) for k in ("a", "b", "new-kind", "c")] == [0, 1, 1, 2]
    assert KindOrder((("a",),)).rank("other") == 1  # no "*": after every named group


def test_a_pack_without_order_toml_gets_the_bundled_order(tmp_path):
    import shutil

    shutil.copytree(patches_dir() / "latentsync", tmp_path / "latentsync")
    own = load(tmp_path)
    assert not (tmp_path / ORDER_FILE).exists()
    assert own.profiles["latentsync"].kind_order == PACK.profiles["latentsync"].kind_order
    assert own.profiles["latentsync"].kind_order.groups[0] == ("replace-statement",)
