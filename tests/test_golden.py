"""Refactors leave numbers alone: a reduced offline and toy sweep equal frames recorded before them.

``fixtures/golden`` holds the results and diagnostics frames of carpet and bottle (the ``synth_root``
dataset) × the five detectors, recorded with the code at commit 0a45003, before the experiment layer was
rebuilt: ``offline`` with the offline profile's tiny random models, ``toy`` with a toy world trained on
the tiny budget below. Both are compared as CSV text, i.e. bit for bit.
"""

from pathlib import Path

import pytest
import torch

from nandlib.config import parse_unit_config
from nandlib.run import run_unit
from nandlib.toy.clip_training import ClipTraining
from nandlib.toy.train import ToyBudget, train_toy
from nandlib.training.adapters import AdapterTraining

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
DETECTORS = {
    "aprilgan": {"kind": "aprilgan"},
    "winclip-0": {"kind": "winclip", "shots": 0},
    "winclip-1": {"kind": "winclip", "shots": 1},
    "winclip-5": {"kind": "winclip", "shots": 5},
    "patchcore": {"kind": "patchcore"},
}
TINY_TOY = ToyBudget(
    clip=ClipTraining(model="nand-toy", steps=4, batch_size=32),  # the architecture recorded
    images_per_class=8,
    adapters=AdapterTraining(epochs=1, init="projection"),
    aux_good=4,
    aux_per_type=2,
)


def _models(profile: str, tmp_path: Path) -> tuple[dict, dict, int]:
    if profile == "offline":
        return (
            {"clip": {"model": "nand-tiny-p14", "image_size": 518}},
            {"model": "nand-tiny-p16", "image_size": 240},
            16,
        )
    weights = train_toy(tmp_path / "toy", 0, TINY_TOY)
    clip = {"model": "nand-toy", "image_size": 64, "checkpoint": str(weights.clip)}
    return {"clip": clip, "adapters": str(weights.adapters)}, clip, 64


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["offline", "toy"])
def test_reduced_sweep_equals_the_recorded_frames(profile, synth_root, tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as recorded
    try:
        nd, winclip_clip, batch_size = _models(profile, tmp_path)
        for name, detector in DETECTORS.items():
            settings = {**detector, "clip": winclip_clip} if detector["kind"] == "winclip" else detector
            for class_name in ("carpet", "bottle"):
                config = parse_unit_config(
                    {
                        "class_name": class_name, "data_root": str(synth_root),
                        "output_dir": str(tmp_path / "out"), "nd": nd, "detector": settings,
                        "batch_size": batch_size, "cache_dir": "off",
                    }
                )  # fmt: skip
                assert config.label == name
                run_unit(config, progress=False)
                for kind in ("results", "diagnostics"):
                    made = tmp_path / "out" / kind / name / f"{class_name}.csv"
                    recorded = GOLDEN / profile / kind / name / f"{class_name}.csv"
                    assert made.read_text() == recorded.read_text(), f"{profile} {kind} {name}/{class_name}"
    finally:
        torch.set_num_threads(threads)
