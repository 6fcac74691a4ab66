"""Bad input to TGVIG: no images, images of different sizes, an empty object name."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from nandlib.tgvig.images import augment, augmenter, check_images, to_pil, to_tensor
from nandlib.tgvig.keywords import check_name


def test_no_images_and_mixed_sizes_are_errors() -> None:
    with pytest.raises(ValueError, match="images: at least one image"):
        check_images([])
    with pytest.raises(ValueError, match=r"one size, got \[\(32, 32\), \(64, 64\)\]"):
        to_tensor([Image.new("RGB", (64, 64)), Image.new("RGB", (32, 32))])


def test_empty_object_name_is_an_error() -> None:
    for name in ("", "   ", None):
        with pytest.raises(ValueError, match="object"):
            check_name(name)


def test_tensor_round_trip_and_augmentation_shapes() -> None:
    image = Image.new("RGB", (8, 8), (255, 0, 128))
    batch = to_tensor([image, image])
    assert batch.shape == (2, 3, 8, 8) and batch.min() == -1 and batch.max() == 1
    assert to_pil(batch)[0].getpixel((3, 3)) == (255, 0, 128)
    copies = augment(batch, 4, augmenter(), torch.Generator().manual_seed(0))
    assert copies.shape == (2, 4, 3, 8, 8) and copies.min() >= -1 and copies.max() <= 1
    with pytest.raises(ValueError, match="n_augmented"):
        augment(batch, 0, augmenter(), torch.Generator())
