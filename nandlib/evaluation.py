"""Encode once, score any normality: what NAND's predictions, units, playground and benchmarks run on.

:class:`EncodedImages` runs a detector and the ND module over images once (each image encoded once when
they share CLIP, :meth:`~nandlib.detectors.base.Detector.predict_with_nd`) and keeps the detector's maps on
the evaluation grid and the ND features. Any normality then costs one text encoding (cached in the ND
module) and the cheap suppression map ``A_sup`` (Eq. 4 with ``f_add``); Eq. 6 is
:func:`nandlib.nand.final_map`. :class:`ClassEvaluation` adds a class's labels and masks and gives the
protocol's results (Tables 2–3) and diagnostics for any of its groups. Book: ``method.md`` and
``protocol.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from nandlib.data import anomaly_groups
from nandlib.data.mvtec import MVTecClass, Sample
from nandlib.detectors.base import Detector, Prediction
from nandlib.diagnostics import defect_pixels, group_diagnostics
from nandlib.geometry import crop_to_region, regions_for, to_eval_grid
from nandlib.nand import NDFeatures, Normality, NormalityDetector, final_map
from nandlib.protocol import class_results


class LazyImages(Sequence[Image.Image]):
    """A split's images, decoded only when indexed (a detector's ``fit`` reads only those it uses)."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):  # noqa: ANN001 - int or slice, as for a list
        if isinstance(index, slice):
            return [sample.image() for sample in self.samples[index]]
        return self.samples[index].image()


class EncodedImages:
    """Images seen once by a detector and the ND module, scored after any normalities.

    Args:
        detector: The (fitted) detector whose maps NAND changes.
        nd: The ND module.
        images: RGB images (a :class:`LazyImages` is read batch by batch).
        batch_size: Images per forward pass; ``None``: all at once.
        progress: Progress bar label; ``None``: no bar.

    Attributes:
        base_maps: ``[N, S, S]`` the detector's maps on the evaluation grid (``A``).
        parts: ND features, one per batch.
        image_sizes: Original ``(width, height)`` of each image.

    Raises:
        ValueError: No images.
    """

    def __init__(
        self,
        detector: Detector,
        nd: NormalityDetector,
        images: Sequence[Image.Image],
        *,
        batch_size: int | None = None,
        progress: str | None = None,
    ) -> None:
        if len(images) == 0:
            raise ValueError("images: need at least one image")
        self.detector = detector
        self.nd = nd
        size = batch_size or len(images)
        maps, self.parts = [], []
        starts = range(0, len(images), size)
        for start in tqdm(starts, desc=progress, disable=progress is None):
            base, features = detector.predict_with_nd(images[start : start + size], nd)
            maps.append(to_eval_grid(base.maps, nd.eval_size))
            self.parts.append(features)
        self.base_maps = torch.cat(maps)
        self.image_sizes = [image_size for part in self.parts for image_size in part.image_sizes]

    @property
    def features(self) -> NDFeatures:
        """The ND features of all images, joined."""
        return NDFeatures.concat(self.parts)

    def suppression(self, normality: Normality) -> torch.Tensor:
        """``A_sup`` ``[N, S, S]`` of every image for one normality, on the detector's evaluation grid."""
        geometry = self.detector.geometry
        return torch.cat([self.nd.suppression_map(part, normality.f_add, geometry) for part in self.parts])

    def predict(self, normalities: Sequence[Normality]) -> Prediction:
        """``A_final = A ⊙ Π_k (1 − A_sup_k)`` (Eq. 6) and image scores ``max A_final``."""
        maps = final_map(self.base_maps, [self.suppression(n) for n in normalities])
        return Prediction(maps=maps, scores=maps.amax(dim=(1, 2)))


@dataclass(frozen=True)
class ClassResults:
    """What one class gives for a set of normalities (one per group).

    Attributes:
        frame: Tidy results (:data:`nandlib.protocol.RESULT_COLUMNS`), one row per group.
        diagnostics: Suppression diagnostics (:data:`nandlib.diagnostics.DIAGNOSTIC_COLUMNS`); empty without
            pixels.
        before: ``[N, S, S]`` maps before NAND.
        after: Group → ``[N, S, S]`` maps after.
        suppressions: Group → ``[N, S, S]`` ``A_sup``.
    """

    frame: pd.DataFrame
    diagnostics: pd.DataFrame
    before: np.ndarray
    after: dict[str, np.ndarray]
    suppressions: dict[str, torch.Tensor]


class ClassEvaluation:
    """A class's test split encoded once; the protocol's results after any normality of its groups.

    Args:
        detector: The fitted detector.
        nd: The ND module of the class.
        data: The class (its test split is encoded).
        label: The detector's name in results (default: ``detector.name``).
        batch_size: Images per forward pass.
        progress: Progress bar label; ``None``: no bar.
    """

    def __init__(
        self,
        detector: Detector,
        nd: NormalityDetector,
        data: MVTecClass,
        *,
        label: str | None = None,
        batch_size: int = 8,
        progress: str | None = None,
    ) -> None:
        self.data = data
        self.nd = nd
        self.label = label or detector.name
        self.groups = anomaly_groups(data.name)
        self.anomaly_types = [sample.anomaly_type for sample in data.test]
        self.encoded = EncodedImages(
            detector, nd, LazyImages(data.test), batch_size=batch_size, progress=progress
        )

    @property
    def detector(self) -> Detector:
        """The detector whose maps are changed."""
        return self.encoded.detector

    @cached_property
    def masks(self) -> torch.Tensor:
        """``[N, S, S]`` ground truth cut to the region the detector's maps cover (nearest)."""
        regions = regions_for(self.detector.geometry, self.encoded.image_sizes)
        masks = [torch.from_numpy(sample.mask()).float()[None] for sample in self.data.test]
        size = self.nd.eval_size
        return torch.cat(
            [crop_to_region(m, r, size, mode="nearest") for m, r in zip(masks, regions, strict=True)]
        ).bool()

    def normalities(self, phrases: Mapping[str, Sequence[str]] | None = None) -> dict[str, Normality]:
        """Each Table 1 group's normality: its shipped phrases, or ``phrases[group]`` where given.

        Raises:
            ValueError: A key of ``phrases`` that is not a group of the class.
        """
        phrases = phrases or {}
        unknown = sorted(set(phrases) - set(self.groups))
        if unknown:
            raise ValueError(f"phrases: {unknown} are not groups of {self.data.name!r}: {list(self.groups)}")
        return {
            group: self.nd.normality(phrases=phrases[group])
            if group in phrases
            else self.nd.normality(group=group)
            for group in self.groups
        }

    def results(self, normalities: Mapping[str, Normality], *, pixels: bool = True) -> ClassResults:
        """AUROCs before and after each group's normality, with that group relabelled normal (Tables 2–3).

        Args:
            normalities: Group → the normality added when that group is relabelled.
            pixels: Also pixel AUROCs and the suppression diagnostics (slower).
        """
        suppressions = {group: self.encoded.suppression(n) for group, n in normalities.items()}
        base = self.encoded.base_maps
        after = {group: final_map(base, [suppression]).numpy() for group, suppression in suppressions.items()}
        before = base.numpy()
        before_scores = before.max(axis=(1, 2))
        after_scores = {group: maps.max(axis=(1, 2)) for group, maps in after.items()}
        truth = self.masks.numpy() if pixels else None
        frame = class_results(
            self.data.name,
            self.label,
            self.anomaly_types,
            before_scores=before_scores,
            after_scores=after_scores,
            masks=truth,
            before_maps=before if pixels else None,
            after_maps=after if pixels else None,
        )
        diagnostics = pd.DataFrame()
        if pixels:
            diagnostics = group_diagnostics(
                self.data.name,
                self.label,
                self.anomaly_types,
                before_scores,
                after_scores,
                pixel_types=defect_pixels(truth, self.anomaly_types),
                defect_suppression={g: s[self.masks].numpy() for g, s in suppressions.items()},
            )
        return ClassResults(frame, diagnostics, before, after, suppressions)
