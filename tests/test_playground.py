"""The prompt-edit loop: same numbers as a sweep unit, clear errors, pictures cut like the maps."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from nandlib.data import read_class
from nandlib.detectors.base import Detector, MapGeometry, Prediction
from nandlib.geometry import crop_image
from nandlib.playground import BOOK_PROFILE_ENV, Playground, book_profile, profile_playground
from nandlib.profiles import PROFILE_DIR, load_profile
from nandlib.prompts import TablePromptGenerator
from nandlib.run import build_nd, run_unit


@pytest.fixture(scope="module")
def unit(tiny_unit, tmp_path_factory):
    config = tiny_unit(tmp_path_factory.mktemp("unit"), cache_dir="off")
    return config, run_unit(config, progress=False)


def test_each_group_gives_the_sweep_units_aurocs(unit, synth_root):
    config, results = unit
    playground = Playground(read_class(synth_root, "carpet"), build_nd(config), batch_size=config.batch_size)
    for row in results.itertuples():
        tried = playground.try_group(row.group).iloc[0]
        assert tried["auroc_before"] == round(100 * row.auroc_before, 1), row.group
        assert tried["auroc_after"] == round(100 * row.auroc_after, 1), row.group
        assert tried["phrases"] == " | ".join(TablePromptGenerator().phrases("carpet", row.group))


def test_unknown_group_is_named(unit, synth_root):
    playground = Playground(read_class(synth_root, "carpet"), build_nd(unit[0]))
    with pytest.raises(ValueError, match="'scratch' is not a group of 'carpet'"):
        playground.try_normality("carpet with a scratch", "scratch")


class _CroppingDetector(Detector):
    """PatchCore's geometry (short side 256, centre 224) with a flat map: only the picture matters."""

    name = "cropping"
    geometry = MapGeometry(resize=256, crop=224)

    def predict(self, images):
        return Prediction(maps=torch.ones(len(images), 28, 28), scores=torch.ones(len(images)))


def test_show_cuts_the_picture_like_the_detectors_map(unit, synth_root):
    data = read_class(synth_root, "carpet")
    playground = Playground(data, build_nd(unit[0]), detector=_CroppingDetector())
    playground.try_normality("carpet with a cut", "cut")
    figure = playground.show("cut", n_images=2)
    cuts = [s for s in data.test if s.anomaly_type in ("cut", "hole")][:2]
    for row, sample in enumerate(cuts):
        shown = figure.axes[4 * row].get_images()[0].get_array()
        image = sample.image()
        expected = crop_image(image, _CroppingDetector.geometry.region(*image.size))
        assert np.array_equal(np.asarray(shown), expected)
    assert len(figure.axes) == 8
    plt.close(figure)


def test_book_profile_follows_the_build(monkeypatch):
    monkeypatch.delenv(BOOK_PROFILE_ENV, raising=False)
    assert book_profile() == "toy"  # the default book, e.g. in Colab
    monkeypatch.setenv(BOOK_PROFILE_ENV, "offline")
    assert book_profile() == "offline"


def test_profile_playground_runs_the_sweeps_models(synth_root, tmp_path, monkeypatch):
    """With the book built on `offline`, the playground's numbers are that profile's unit's numbers."""
    monkeypatch.setenv(BOOK_PROFILE_ENV, "offline")
    playground = profile_playground("carpet", data_root=synth_root)
    assert playground.detector.backbone.model_name == "nand-tiny-p14"
    assert playground.detector.backbone.image_size == 518
    config = load_profile("offline").unit("carpet", "aprilgan", synth_root, tmp_path, cache_dir="off")
    row = run_unit(config, progress=False).iloc[0]
    tried = playground.try_group(row["group"]).iloc[0]
    assert tried["auroc_after"] == round(100 * row["auroc_after"], 1)


def test_a_profile_without_data_takes_the_given_dataset(synth_root, tmp_path):
    """Like `paper` (MVTec AD on disk), but with the offline profile's tiny models."""
    offline = (PROFILE_DIR / "offline.yaml").read_text()
    needs_data = tmp_path / "needs-data.yaml"
    needs_data.write_text(offline.replace("synthetic: {seed: 0, scale: small, size: 128}", "{}"))
    with pytest.raises(ValueError, match="needs a dataset"):
        profile_playground("carpet", profile=str(needs_data))
    playground = profile_playground("carpet", profile=str(needs_data), data_root=synth_root)
    assert len(playground.anomaly_types) == len(read_class(synth_root, "carpet").test)
