"""Shared fixtures: a tiny synthetic dataset and the real MVTec AD sample (when present)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nandlib.cache import CACHE_ENV
from nandlib.config import UnitConfig, parse_unit_config
from nandlib.data import generate_dataset

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
def feature_cache_outside_the_repo(tmp_path_factory: pytest.TempPathFactory):
    """Runs under test (papermill kernels included) cache features in a temporary folder, not <repo>/cache."""
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("feature-cache"))
    yield
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


@pytest.fixture(scope="session")
def tiny_unit(synth_root: Path):
    """Make an APRIL-GAN unit config on ``synth_root``'s carpet with the tiny random CLIP at 56 px."""

    def make(out: Path, **changes) -> UnitConfig:
        base = {"class_name": "carpet", "data_root": str(synth_root), "output_dir": str(out)}
        nd = {"clip": {"model": "nand-tiny-p14", "image_size": 56}}
        return parse_unit_config({**base, "nd": nd, "batch_size": 4, **changes})

    return make
