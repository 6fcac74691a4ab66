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
