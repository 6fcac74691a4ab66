"""The one interface every detector shares (book: ``method.md``, "Detectors").

A detector follows the scikit-learn estimator contract: its configuration is given to
``__init__``, ``fit`` learns from normal images only (a no-op for zero-shot detectors) and
returns ``self``, fitted state carries a trailing underscore, and ``predict`` returns raw anomaly maps
and native image scores for a batch (before ``fit``: :class:`NotFittedError`).
NAND (:func:`nandlib.nand.add_normality`) wraps any detector that produces maps.

What generic code needs from a detector it asks the detector, never its type: how it is built from a
config (``Settings``, :meth:`Detector.from_settings`, :meth:`Detector.default_name`), whether it can share
its forward pass with the ND module (:meth:`Detector.predict_with_nd`) or serve as one
(:meth:`Detector.normality_source`), whether its memory of normal features takes example images
(:attr:`Detector.accepts_examples`, :meth:`Detector.add_normal_examples`), and where its weights come
from (:meth:`Detector.provenance`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from PIL import Image
from pydantic import BaseModel
from sklearn.exceptions import NotFittedError

from nandlib.config import Settings

if TYPE_CHECKING:
    from nandlib.detectors.aprilgan import AprilGAN
    from nandlib.detectors.registry import BuildContext
    from nandlib.nand import NDFeatures, NormalityDetector

__all__ = ["Detector", "MapGeometry", "NoSettings", "NotFittedError", "Prediction", "check_is_fitted"]


def check_is_fitted(detector: object, attribute: str, msg: str) -> None:
    """Raise scikit-learn's :class:`NotFittedError` with ``msg`` unless ``fit`` has set ``attribute``."""
    if not hasattr(detector, attribute):
        raise NotFittedError(msg)


class NoSettings(Settings):
    """A detector configured by its :class:`~nandlib.detectors.registry.BuildContext` alone."""


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

    Subclasses set ``name`` and ``geometry`` (and ``class_name`` when they are built for one class) and
    implement :meth:`predict`; those that learn from normal images override :meth:`fit`. Those built
    from configs set ``kind`` (their registry key)
    and ``Settings``, and implement :meth:`from_settings`.
    """

    kind: ClassVar[str] = ""
    accepts_examples: ClassVar[bool] = False
    Settings: ClassVar[type[BaseModel]] = NoSettings
    name: str = "detector"
    class_name: str | None = None
    geometry: MapGeometry

    @classmethod
    def from_settings(cls, settings: BaseModel, context: BuildContext) -> Detector:
        """Build the detector from its validated ``Settings`` and the unit's context."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a config")

    @classmethod
    def default_name(cls, settings: BaseModel) -> str:
        """Its name in results when the config gives none (default: ``kind``)."""
        return cls.kind

    def fit(self, images: Sequence[Image.Image]) -> Detector:
        """Learn from normal (``train/good``) images; zero-shot detectors ignore them.

        Args:
            images: Normal RGB images (a lazy sequence is fine: a detector reads only those it uses).

        Returns:
            ``self``.
        """
        return self

    @abstractmethod
    def predict(self, images: Sequence[Image.Image]) -> Prediction:
        """Anomaly maps and native image scores for a batch of RGB images."""

    def predict_with_nd(
        self, images: Sequence[Image.Image], nd: NormalityDetector
    ) -> tuple[Prediction, NDFeatures]:
        """The detector's prediction and the ND module's features of the same images.

        The default runs both; a detector that shares the ND module's encoder encodes each image once.
        """
        return self.predict(images), nd.features(images)

    def add_normal_examples(
        self, images: Sequence[Image.Image], masks: Sequence[Any] | None = None
    ) -> Detector:
        """The example route: the examples' features join the memory of normal features (in place).

        Implemented by detectors that declare :attr:`accepts_examples`; it rebinds fitted attributes
        instead of changing their tensors, so a ``copy.copy`` of a fitted detector takes examples without
        touching the original. Book: ``examples_vs_text.md``.

        Args:
            images: RGB images of the normality to add.
            masks: Optional boolean ``[H, W]`` defect masks, one per image: only the patches touching the
                defect join (off by default: every patch of the images joins).

        Returns:
            ``self``.

        Raises:
            NotImplementedError: The detector keeps no memory that takes examples.
        """
        raise NotImplementedError(f"{self.name}: no example route (accepts_examples is False)")

    def normality_source(self) -> AprilGAN | None:
        """The APRIL-GAN whose machinery can serve as this detector's ND module (``None``: none)."""
        return None

    def provenance(self) -> dict[str, Any]:
        """Where its weights come from (``weights``) and what fitting chose, for the provenance record."""
        return {}
