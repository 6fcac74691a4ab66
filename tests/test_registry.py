"""A detector is one module plus one registration: a k-nearest-neighbour detector on raw pixels, defined here,
runs through ``nand run``, the sweep (its notebooks in other processes), the tables and NAND.

It is registered the way a plugin package would register it: an entry point in the group
``nandlib.detectors`` (a ``*.dist-info`` folder on the path); nothing else of nandlib knows it.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from pydantic import PositiveInt
from typer.testing import CliRunner

from nandlib.config import Settings
from nandlib.detectors.base import Detector, MapGeometry, Prediction, check_is_fitted
from nandlib.detectors.registry import ENTRY_POINT_GROUP, detector_class, known_kinds, register

HERE = Path(__file__).parent


class PixelKNNSettings(Settings):
    """Side of the squashed image the pixels are compared at."""

    side: PositiveInt = 16


class PixelKNN(Detector):
    """Per pixel, the distance to the nearest training image's pixel at the same place (squashed RGB)."""

    kind = "pixel-knn"
    Settings = PixelKNNSettings
    name = "pixel-knn"

    def __init__(self, side: int = 16, class_name: str | None = None) -> None:
        self.side = side
        self.class_name = class_name
        self.geometry = MapGeometry(resize=side)

    @classmethod
    def from_settings(cls, settings: PixelKNNSettings, context) -> "PixelKNN":
        return cls(settings.side, context.class_name)

    def _pixels(self, images) -> torch.Tensor:
        squashed = [np.asarray(im.convert("RGB").resize((self.side, self.side))) for im in images]
        return torch.from_numpy(np.stack(squashed)).float().div(255)

    def fit(self, images) -> "PixelKNN":
        self.train_ = self._pixels(images[:])
        return self

    def predict(self, images) -> Prediction:
        check_is_fitted(self, "train_", "PixelKNN: call fit(images) first")
        pixels = self._pixels(images)
        distances = (pixels[:, None] - self.train_[None]).norm(dim=-1)  # [B, M, side, side]
        maps = distances.amin(dim=1)
        return Prediction(maps=maps, scores=maps.amax(dim=(1, 2)))

    def provenance(self) -> dict:
        return {"weights": "raw pixels (no weights)"}


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """Register ``pixel-knn`` as an entry point, here and in the sweep's kernels (PYTHONPATH)."""
    site = tmp_path / "site"
    info = site / "pixel_knn_plugin-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pixel-knn-plugin\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\npixel-knn = test_registry:PixelKNN\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("PYTHONPATH", f"{site}:{HERE}")
    return site


@pytest.fixture
def profile_file(tmp_path):
    """The offline profile's tiny ND module, with the pixel detector as the only detector."""
    profile = {
        "name": "pixels",
        "description": "tiny random ND module, raw-pixel kNN detector: a registry test",
        "classes": ["carpet", "bottle"],
        "batch_size": 4,
        "nd": {"clip": {"model": "nand-tiny-p14", "image_size": 56}},
        "detectors": {"pixel": {"kind": "pixel-knn", "side": 12}},
    }
    path = tmp_path / "pixels.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.mark.slow
def test_a_detector_defined_outside_runs_through_run_sweep_tables_and_nand(
    plugin_path, profile_file, synth_root, tmp_path
):
    from nandlib.cli import app
    from nandlib.data import read_class
    from nandlib.nand import add_normality
    from nandlib.profiles import load_profile
    from nandlib.report import load_results
    from nandlib.run import build_nd
    from nandlib.sweep import run_sweep
    from nandlib.tables import table3

    assert "pixel-knn" in known_kinds() and detector_class("pixel-knn").__name__ == "PixelKNN"
    single = tmp_path / "single"
    args = ["run", "--profile", str(profile_file), "--data", str(synth_root), "--class", "carpet"]
    result = CliRunner().invoke(
        app, [*args, "--detector", "pixel", "--out", str(single), "--cache-dir", "off"]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(single / "results" / "pixel" / "carpet.csv")
    assert (
        list(frame["group"]) == ["thread", "metal", "color", "cut"] and (frame["detector"] == "pixel").all()
    )

    profile = load_profile(profile_file, data_root=synth_root)
    swept = tmp_path / "swept"
    status = run_sweep(profile, synth_root, swept, workers=1, cache_dir="off")
    assert list(status["status"]) == ["done", "done"], status.to_string()
    results = load_results(swept)
    assert sorted(results["class"].unique()) == ["bottle", "carpet"]
    pd.testing.assert_frame_equal(results[results["class"] == "carpet"].reset_index(drop=True), frame)
    row = table3(results).iloc[0]
    assert (row["detector"], row["n_classes"]) == ("pixel", 2)

    unit = profile.unit("carpet", "pixel", synth_root, tmp_path, cache_dir="off")
    data = read_class(synth_root, "carpet")
    images = [s.image() for s in data.test[:3]]
    detector = PixelKNN(12, "carpet").fit([s.image() for s in data.train])
    nand = add_normality(detector, group="cut", nd=build_nd(unit))
    got = nand.predict(images)
    assert got.maps.shape == (3, 256, 256) and torch.all(got.scores <= detector.predict(images).scores.max())


def test_register_makes_a_kind_known_in_process_and_guards_the_built_ins():
    class Other(PixelKNN):
        kind = "other-knn"

    register("other-knn", Other)
    assert detector_class("other-knn") is Other
    with pytest.raises(ValueError, match="built-in"):
        register("patchcore", Other)
    with pytest.raises(ValueError, match="unknown detector kind 'padim'.*patchcore"):
        detector_class("padim")


def test_predicting_before_fit_raises_not_fitted():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="fit"):
        PixelKNN().predict([])
