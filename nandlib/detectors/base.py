"""The one interface every detector shares (book: ``method.md``, "Detectors").

A detector follows the scikit-learn estimator contract: its configuration is given to
``__init__``, ``fit`` learns from normal images only (a no-op for zero-shot detectors) and
returns ``self``, and ``predict`` returns raw anomaly maps and native image scores for a batch.
NAND (:func:`nandlib.nand.add_normality`) wraps any detector that produces maps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image


@dataclass(frozen=True)
class MapGeometry:
    """Where a detector's anomaly map lies on the original image.

    A detector either squashes the whole image to a square (``crop=None``: the map covers the
    whole image) or resizes the image's short side to ``resize`` and takes a centred
    ``crop`` × ``crop`` square (PatchCore: 256 then 224), so its map covers only that crop.

    Args:
        resize: Side (squash) or short side (resize + crop) in pixels.
        crop: Side of the centred crop in pixels, or ``None`` for no crop.
    """

    resize: int
    crop: int | None = None

    def region(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Box of the original image covered by the map, as fractions ``(x0, y0, x1, y1)``.

        Args:
            width: Original image width in pixels.
            height: Original image height in pixels.
        """
        if self.crop is None:
            return (0.0, 0.0, 1.0, 1.0)
        scale = self.resize / min(width, height)
        half_w = self.crop / (2 * width * scale)
        half_h = self.crop / (2 * height * scale)
        return (0.5 - half_w, 0.5 - half_h, 0.5 + half_w, 0.5 + half_h)


@dataclass(frozen=True)
class Prediction:
    """Output of :meth:`Detector.predict` for a batch of ``B`` images.

    Attributes:
        maps: Raw anomaly maps ``[B, H, W]`` (float32, CPU) in the detector's own geometry.
        scores: The detector's native image scores ``[B]`` (float32, CPU).
    """

    maps: torch.Tensor
    scores: torch.Tensor


class Detector(ABC):
    """Base class of all detectors: APRIL-GAN, WinCLIP, PatchCore and NAND-wrapped ones.

    Subclasses set ``name`` and ``geometry`` and implement :meth:`predict`; those that learn
    from normal images override :meth:`fit`.
    """

    name: str = "detector"
    geometry: MapGeometry

    def fit(self, images: Sequence[Image.Image]) -> Detector:
        """Learn from normal (``train/good``) images; zero-shot detectors ignore them.

        Args:
            images: Normal RGB images.

        Returns:
            ``self``.
        """
        return self

    @abstractmethod
    def predict(self, images: Sequence[Image.Image]) -> Prediction:
        """Anomaly maps and native image scores for a batch of RGB images."""
