"""Images in and out of the generator: checks, tensors in [-1, 1], and the augmentations ``I_1..I_N``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2


def check_images(images: Sequence[Image.Image], what: str = "images") -> tuple[int, int]:
    """The common ``(width, height)`` of ``images``.

    Raises:
        ValueError: No images, or images of different sizes, naming ``what``.
    """
    if len(images) == 0:
        raise ValueError(f"{what}: at least one image is needed, got none")
    sizes = sorted({im.size for im in images})
    if len(sizes) > 1:
        raise ValueError(f"{what}: all images must have one size, got {sizes} (resize them first)")
    return sizes[0]


def to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB images → ``[B, 3, H, W]`` float in [-1, 1] (the VQGAN's range)."""
    check_images(images)
    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1


def to_pil(batch: torch.Tensor) -> list[Image.Image]:
    """``[B, 3, H, W]`` in [-1, 1] → RGB images (clamped)."""
    array = ((batch.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1)
    return [Image.fromarray(a.cpu().numpy(), "RGB") for a in array]


def augmenter(degrees: float = 10.0, translate: float = 0.05, jitter: float = 0.1, flip: bool = True):
    """The augmentations that make ``I_1..I_N`` from an original (§4.1; the paper names none: ours).

    Args:
        degrees: Largest rotation.
        translate: Largest shift, as a fraction of the side.
        jitter: Brightness and contrast jitter.
        flip: Random horizontal flips.
    """
    steps = [v2.RandomHorizontalFlip()] if flip else []
    steps += [
        v2.RandomAffine(degrees=degrees, translate=(translate, translate)),
        v2.ColorJitter(brightness=jitter, contrast=jitter),
    ]
    return v2.Compose(steps)


def augment(originals: torch.Tensor, n: int, transform, generator: torch.Generator) -> torch.Tensor:
    """``n`` augmented copies of each original: ``[K, n, 3, H, W]`` in [-1, 1].

    The transform is applied in [0, 1]; torch's global RNG is seeded from ``generator`` for it.
    """
    if n < 1:
        raise ValueError(f"n_augmented: must be a positive integer, got {n!r}")
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    unit = (originals + 1) / 2
    copies = [torch.stack([transform(image) for _ in range(n)]) for image in unit]
    return torch.stack(copies).clamp(0, 1) * 2 - 1
