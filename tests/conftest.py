"""Shared fixtures: a tiny synthetic dataset and the real MVTec AD sample (when present)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nandlib.backbones import ClipBackbone
from nandlib.cache import CACHE_ENV
from nandlib.config import UnitConfig, parse_unit_config
from nandlib.data import generate_dataset
from nandlib.paths import HOME_ENV

REPO = Path(__file__).resolve().parents[1]
MVTEC_SAMPLE = REPO.parent / "shared" / "data" / "mvtec_sample"
SYNTH_CLASSES = ("carpet", "bottle")
SYNTH_SEED = 0
SYNTH_SIZE = 64


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic MVTec-layout dataset: carpet and bottle, 64 px, scale "small" (10 train, 5 good and
    3 images per defect type), seed 0. Read-only: copy it before changing anything."""
    out = tmp_path_factory.mktemp("synth") / "mvtec"
    return generate_dataset(out, SYNTH_CLASSES, seed=SYNTH_SEED, scale="small", size=SYNTH_SIZE)


@pytest.fixture(scope="session")
def mvtec_sample() -> Path:
    """Real MVTec AD files (bottle, transistor, grid) in ``<repo>/../shared/data/mvtec_sample``."""
    if not MVTEC_SAMPLE.is_dir():
        pytest.skip(f"real MVTec AD sample not found at {MVTEC_SAMPLE}")
    return MVTEC_SAMPLE


@pytest.fixture(scope="session", autouse=True)
def user_data_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory):
    """Runs under test (papermill kernels included) keep their user data folder and feature cache in
    temporary folders, never in the checkout's or the user's."""
    chosen = {HOME_ENV: "user-data", CACHE_ENV: "feature-cache"}
    previous = {name: os.environ.get(name) for name in chosen}
    for name, folder in chosen.items():
        os.environ[name] = str(tmp_path_factory.mktemp(folder))
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_unit(synth_root: Path):
    """Make an APRIL-GAN unit config on ``synth_root``'s carpet with the tiny random CLIP at 56 px."""

    def make(out: Path, **changes) -> UnitConfig:
        base = {"class_name": "carpet", "data_root": str(synth_root), "output_dir": str(out)}
        nd = {"clip": {"model": "nand-tiny-p14", "image_size": 56}}
        return parse_unit_config({**base, "nd": nd, "batch_size": 4, **changes})

    return make


@pytest.fixture
def count_encodings(monkeypatch) -> list[int]:
    """Batch sizes of every CLIP image encoding in the test (an empty list: nothing was encoded)."""
    calls: list[int] = []
    original = ClipBackbone.encode_image_layers

    def counted(self, images, layers):
        calls.append(len(images))
        return original(self, images, layers)

    monkeypatch.setattr(ClipBackbone, "encode_image_layers", counted)
    return calls


@pytest.fixture
def damage_file():
    """``damage(path, how)``: ``"missing"`` deletes the file, ``"corrupt"`` flips its middle byte."""

    def damage(path, how: str) -> None:
        if how == "missing":
            path.unlink()
        else:
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))

    return damage
