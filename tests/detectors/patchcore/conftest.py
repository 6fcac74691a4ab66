"""Shared fixtures of the PatchCore tests: one random WideResNet50 and small generated images."""

import numpy as np
import pytest
from PIL import Image

from nandlib.detectors.patchcore import load_backbone


@pytest.fixture(scope="session")
def random_wrn50():
    """torchvision WideResNet50-2 with its default random init under seed 0 (built once)."""
    model, _, _ = load_backbone("wide_resnet50_2", None, seed=0)
    return model


def _make_images(count: int, seed: int, size: int = 64) -> list[Image.Image]:
    """Smooth random RGB images: a random 8×8 pattern upsampled bicubically."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(count, 8, 8, 3), dtype=np.uint8)
    return [Image.fromarray(pattern).resize((size, size), Image.BICUBIC) for pattern in coarse]


@pytest.fixture(scope="session")
def make_images():
    """Factory ``make_images(count, seed, size=64)`` of smooth random RGB images."""
    return _make_images
