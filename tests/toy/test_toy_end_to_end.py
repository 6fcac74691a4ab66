"""The toy profile end to end on a reduced world: train, sweep, Table 2/3 with the extra columns."""

from __future__ import annotations

import pytest

from nandlib.diagnostics import DIAGNOSTIC_COLUMNS
from nandlib.profiles import load_profile
from nandlib.report import load_diagnostics, load_results
from nandlib.tables import DIAGNOSTIC_SHOWN, diagnostics_table, table2, table3
from nandlib.toy.clip_training import ClipTraining
from nandlib.toy.train import ToyBudget, train_toy
from nandlib.training.adapters import AdapterTraining

TINY = ToyBudget(
    clip=ClipTraining(steps=2, batch_size=16),
    images_per_class=2,
    adapters=AdapterTraining(epochs=1, init="projection"),
    aux_good=1,
    aux_per_type=1,
)


def test_toy_profile_schema() -> None:
    profile = load_profile("toy")
    assert profile.nd.clip.model == "nand-toy-p4" and profile.data.synthetic.size == 64
    assert (profile.nd.clip.checkpoint, profile.nd.adapters) == ("toy:clip", "toy:adapters")
    assert set(profile.detectors) == {"aprilgan", "winclip-0", "winclip-1", "winclip-5", "patchcore"}


@pytest.mark.slow
def test_reduced_toy_world_through_the_sweep_gives_tables_with_diagnostics(
    tmp_path, synth_root, monkeypatch
) -> None:
    from nandlib.companion import resolve_weights
    from nandlib.sweep import run_sweep

    weights = train_toy(tmp_path / "seed0", 0, TINY)
    monkeypatch.setattr("nandlib.toy.train.toy_weights", lambda seed, log=None: weights)
    profile = resolve_weights(load_profile("toy"))
    assert profile.nd.clip.checkpoint == str(weights.clip)
    out = tmp_path / "generated"
    status = run_sweep(
        profile, synth_root, out, classes=["carpet"], detectors=["aprilgan", "winclip-1"], workers=1
    )
    assert (status["status"] == "done").all(), status
    results, diagnostics = load_results(out), load_diagnostics(out)
    assert list(diagnostics.columns) == list(DIAGNOSTIC_COLUMNS)
    assert len(diagnostics) == len(results) == 2 * 4  # two detectors, carpet's four groups
    assert diagnostics[["others_before", "others_after"]].stack().between(0, 1).all()
    assert diagnostics["sup_specificity"].notna().all()
    table = table2(results)
    assert {"before", "after", "delta"} <= set(table.columns) and len(table) == 5  # AVERAGE + 4 groups
    assert table3(results)["n_classes"].tolist() == [1, 1]
    extra = diagnostics_table(results, diagnostics)
    assert list(extra.columns) == ["detector", "n_groups", *DIAGNOSTIC_SHOWN]
    assert extra["n_groups"].tolist() == [4, 4]
