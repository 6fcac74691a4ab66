"""The toy profile end to end on a reduced world: train, evaluate, Table 2/3 with the extra columns."""

from __future__ import annotations

import dataclasses

import pytest

from nandlib.backbones import load_clip
from nandlib.data import read_class
from nandlib.detectors.aprilgan import AprilGAN
from nandlib.nand import NormalityDetector
from nandlib.profiles import load_profile
from nandlib.tables import table2, table3
from nandlib.toy.clip_training import ClipTraining
from nandlib.toy.evaluate import evaluate_class
from nandlib.toy.metrics import DIAGNOSTIC_COLUMNS, summarize_seeds
from nandlib.toy.train import ToyBudget, train_toy
from nandlib.training.adapters import AdapterTraining

TINY = ToyBudget(
    clip=ClipTraining(steps=2, batch_size=16),
    images_per_class=2,
    adapters=AdapterTraining(epochs=1, normality_weight=1.0),
    aux_good=1,
    aux_per_type=1,
)


def test_toy_profile_schema() -> None:
    profile = load_profile("toy")
    assert profile.nd["model"] == "nand-toy" and profile.data["synthetic"]["size"] == 64
    assert set(profile.detectors) == {"aprilgan", "winclip-0", "winclip-1", "winclip-5", "patchcore"}


@pytest.mark.slow
def test_reduced_toy_world_gives_tables_with_diagnostics(tmp_path, synth_root) -> None:
    frames, diagnostics = [], []
    for seed in (0, 1):
        weights = train_toy(tmp_path / f"seed{seed}", seed, TINY)
        backbone = load_clip("nand-toy", checkpoint=weights.clip)
        aprilgan = AprilGAN(backbone, "carpet", adapters=weights.adapters)
        results, extra = evaluate_class(
            aprilgan, NormalityDetector(aprilgan), read_class(synth_root, "carpet"), "aprilgan"
        )
        frames.append(results)
        diagnostics.append(extra)
    assert list(diagnostics[0].columns) == list(DIAGNOSTIC_COLUMNS)
    assert diagnostics[0]["others_before"].between(0, 1).all()
    assert diagnostics[0]["sup_specificity"].notna().all()
    table = table2(frames[0].merge(diagnostics[0], on=["class", "group", "detector"]))
    assert {"before", "after", "delta"} <= set(table.columns) and len(table) == 5  # AVERAGE + 4 groups
    assert table3(frames[0])["n_classes"].tolist() == [1]
    summary = summarize_seeds(
        [f.merge(d, on=["class", "group", "detector"]) for f, d in zip(frames, diagnostics, strict=True)]
    )
    assert {"auroc_after_mean", "auroc_after_sd", "sup_specificity_sd"} <= set(summary.columns)
    assert dataclasses.is_dataclass(weights) and weights.info["seed"] == 1
