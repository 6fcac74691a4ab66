"""run_unit with the feature cache: a rerun gives identical results without encoding any image."""

import pandas as pd
import pytest

from nandlib.backbones import ClipBackbone
from nandlib.data import read_class
from nandlib.run import UnitConfig, run_unit


@pytest.fixture
def count_encodings(monkeypatch):
    calls: list[int] = []
    original = ClipBackbone.encode_image_layers

    def counted(self, images, layers):
        calls.append(len(images))
        return original(self, images, layers)

    monkeypatch.setattr(ClipBackbone, "encode_image_layers", counted)
    return calls


def test_rerun_with_cache_is_identical_and_encodes_nothing(synth_root, tmp_path, count_encodings):
    def config(out: str, cache_dir: str) -> UnitConfig:
        return UnitConfig(
            class_name="carpet", detector="aprilgan", data_root=str(synth_root),
            output_dir=str(tmp_path / out), nd_model="nand-tiny-p14", nd_image_size=56, batch_size=4,
            cache_dir=cache_dir,
        )  # fmt: skip

    cold = run_unit(config("cold", str(tmp_path / "cache")), progress=False)
    encoded = sum(count_encodings)
    assert encoded == len(read_class(synth_root, "carpet").test)  # each test image once
    warm = run_unit(config("warm", str(tmp_path / "cache")), progress=False)
    assert sum(count_encodings) == encoded  # the warm run encoded no image
    pd.testing.assert_frame_equal(cold, warm)


def test_unit_writes_diagnostics_equal_to_a_recomputation(synth_root, tmp_path):
    """The diagnostics a unit writes match ones recomputed from whole suppression maps of all test images."""
    import numpy as np
    import torch

    from nandlib.diagnostics import DIAGNOSTIC_COLUMNS
    from nandlib.geometry import FULL_IMAGE, crop_to_region
    from nandlib.nand import NormalityDetector, predict_with_features, suppression_maps
    from nandlib.protocol import pixel_auroc
    from nandlib.run import build_aprilgan, unit_paths

    config = UnitConfig(
        class_name="carpet", detector="aprilgan", data_root=str(synth_root), output_dir=str(tmp_path),
        nd_model="nand-tiny-p14", nd_image_size=56, batch_size=3, cache_dir="off",
    )  # fmt: skip
    results = run_unit(config, progress=False)
    written = pd.read_csv(unit_paths(tmp_path, "aprilgan", "carpet")["diagnostics"])
    assert list(written.columns) == list(DIAGNOSTIC_COLUMNS)
    assert written["group"].tolist() == results["group"].tolist()

    aprilgan = build_aprilgan(config)
    data = read_class(synth_root, "carpet")
    nd = NormalityDetector(aprilgan)
    _, features = predict_with_features(aprilgan, nd, [s.image() for s in data.test])
    full = [torch.from_numpy(s.mask()).float()[None] for s in data.test]
    masks = torch.cat([crop_to_region(m, FULL_IMAGE, mode="nearest") for m in full]).bool()
    types = np.array([s.anomaly_type for s in data.test])
    groups = {"cut": ["cut", "hole"], "color": ["color"]}
    sups = suppression_maps(nd, features, aprilgan.geometry, list(groups))
    for group, members in groups.items():
        defect = masks.numpy()
        in_group = np.isin(types, members)[:, None, None] & defect
        expected = pixel_auroc(in_group[defect], sups[group].numpy()[defect])
        got = written.set_index("group").loc[group, "sup_specificity"]
        assert got == pytest.approx(expected, abs=1e-6)
