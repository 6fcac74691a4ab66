"""NAND: normality addition via normality detection (Yi, Jung, Yoon, AIPR 2024).

The ND module (:class:`NormalityDetector`) is APRIL-GAN's zero-shot machinery with the abnormal text
feature replaced by ``f_add``, a text feature of the normality to add (Eq. 3 over phrases × APRIL-GAN's
35 templates). Its map ``A_sup`` (Eq. 4 with ``f_add``) marks where the image shows that normality.
:func:`add_normality` (Eq. 5) wraps any map-producing detector so that its map becomes
``A_final = A ⊙ Π_k (1 − A_sup_k)`` (Eq. 6) on a 256 × 256 grid, and its image score ``max A_final``.
Book: ``method.md``, "Normality detection" and "Normality addition".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from nandlib.detectors.aprilgan import AprilGAN, AprilGANFeatures, zero_shot_maps
from nandlib.detectors.base import Detector, MapGeometry, Prediction
from nandlib.geometry import EVAL_SIZE, FULL_IMAGE, crop_to_region, regions_for
from nandlib.prompts import PromptGenerator, TablePromptGenerator, normality_prompts, templates

SUPPRESSION_CHUNK = 8  # images per suppression pass: bounds the memory of the 518² intermediates


@dataclass(frozen=True)
class NDFeatures:
    """The expensive part of the ND module for a batch of images: computed once, reused per normality.

    Attributes:
        patch_tokens: Per layer ``[B, N, D]`` projected, L2-normalised patch tokens (APRIL-GAN's).
        grid: Patch grid ``(rows, columns)``.
        map_size: ``(height, width)`` the logits are upsampled to before the softmax (518 × 518).
        image_sizes: Original ``(width, height)`` of each image.
        f_nor: ``[D]`` APRIL-GAN's normal text feature of the class.
    """

    patch_tokens: tuple[torch.Tensor, ...]
    grid: tuple[int, int]
    map_size: tuple[int, int]
    image_sizes: tuple[tuple[int, int], ...]
    f_nor: torch.Tensor

    def __len__(self) -> int:
        return len(self.image_sizes)

    @classmethod
    def concat(cls, parts: Sequence[NDFeatures]) -> NDFeatures:
        """Join features of consecutive batches (same model, grid and class).

        Raises:
            ValueError: If ``parts`` is empty or the parts disagree on grid or map size.
        """
        if not parts or any((p.grid, p.map_size) != (parts[0].grid, parts[0].map_size) for p in parts):
            raise ValueError("parts: need one or more NDFeatures with the same grid and map size")
        layers = [p.patch_tokens for p in parts]
        return cls(
            patch_tokens=tuple(torch.cat(layer) for layer in zip(*layers, strict=True)),
            grid=parts[0].grid,
            map_size=parts[0].map_size,
            image_sizes=tuple(size for p in parts for size in p.image_sizes),
            f_nor=parts[0].f_nor,
        )


@dataclass(frozen=True)
class Normality:
    """One normality to add: where it came from, its phrases and its text feature ``f_add`` (Eq. 3)."""

    label: str
    phrases: tuple[str, ...]
    f_add: torch.Tensor


class NormalityDetector:
    """The ND module: APRIL-GAN's zero-shot map with ``f_add`` in place of ``f_abn``.

    It shares the backbone, adapters and class name of ``aprilgan``; when that same APRIL-GAN is the
    detector being wrapped, each image is encoded once.

    Args:
        aprilgan: The APRIL-GAN whose backbone, adapters, class name and ``f_nor`` are used.
        generator: Source of phrases for group names (default: the shipped phrase table).
        layer_combine: ``"mean"`` over layers (default; ``A_sup ∈ [0, 1]``, so ``1 − A_sup ≥ 0``) or
            ``"sum"`` as in APRIL-GAN's Eq. 4 (range ``[0, n_layers]``: ``1 − A_sup`` can be negative,
            which flips the sign of the final map; kept for comparison only).
        eval_size: Side of the grid ``A`` and ``A_sup`` are compared on (256, the paper's).

    Raises:
        ValueError: Unknown ``layer_combine``.
    """

    def __init__(
        self,
        aprilgan: AprilGAN,
        *,
        generator: PromptGenerator | None = None,
        layer_combine: str = "mean",
        eval_size: int = EVAL_SIZE,
    ) -> None:
        if layer_combine not in ("mean", "sum"):
            raise ValueError(f"layer_combine: expected 'mean' or 'sum', got {layer_combine!r}")
        self.aprilgan = aprilgan
        self.generator = generator if generator is not None else TablePromptGenerator()
        self.layer_combine = layer_combine
        self.eval_size = eval_size
        self._f_add: dict[tuple[str, ...], torch.Tensor] = {}
        self._phrase_sums: dict[str, torch.Tensor] = {}  # phrase -> sum of its 35 unit prompt embeddings

    @property
    def class_name(self) -> str:
        """Class whose normal text feature ``f_nor`` is the reference state."""
        return self.aprilgan.class_name

    def features_from(self, features: AprilGANFeatures) -> NDFeatures:
        """ND features from an APRIL-GAN forward pass already made (no second encoding)."""
        return NDFeatures(
            patch_tokens=features.patch_tokens,
            grid=features.grid,
            map_size=features.map_size,
            image_sizes=features.image_sizes,
            f_nor=self.aprilgan.text_features[:, 0],
        )

    def features(self, images: Sequence[Image.Image]) -> NDFeatures:
        """Encode images once (the expensive step); reuse the result for every normality."""
        return self.features_from(self.aprilgan.features(images))

    def phrases(
        self, *, group: str | None = None, phrases: str | Sequence[str] | None = None
    ) -> tuple[str, tuple[str, ...]]:
        """Resolve a normality to ``(label, phrases)``: a Table 1 group of the class (phrases from
        :attr:`generator`) or your own phrase(s).

        Raises:
            ValueError: Neither or both given, empty phrases, or a group unknown for the class.
        """
        if (group is None) == (phrases is None):
            raise ValueError("normality: give either group= or phrases=")
        if group is not None:
            return group, tuple(self.generator.phrases(self.class_name, group))
        chosen = (phrases,) if isinstance(phrases, str) else tuple(phrases)
        if not chosen or not all(p.strip() for p in chosen):
            raise ValueError("phrases: need one or more non-empty phrases")
        return "; ".join(chosen), chosen

    def normality_feature(self, phrases: Sequence[str]) -> torch.Tensor:
        """``f_add`` (Eq. 3) over every phrase in each of APRIL-GAN's 35 templates; cached per phrase list.

        Eq. 3's mean runs over all ``35 · len(phrases)`` unit prompt embeddings; it is kept as per-phrase
        sums, so a list that adds one phrase to earlier ones encodes only that phrase's 35 prompts (the
        prompt-edit loop, book: ``try_your_normality.ipynb``).

        Raises:
            ValueError: Empty phrase list or an empty phrase.
        """
        key = tuple(phrases)
        if not key:
            raise ValueError("phrases: need at least one phrase")
        if key not in self._f_add:
            new = {p: normality_prompts(self.class_name, [p]) for p in key if p not in self._phrase_sums}
            if new:
                flat = [prompt for prompts in new.values() for prompt in prompts]
                embeddings = self.aprilgan.backbone.unit_text_embeddings(flat)
                sizes = [len(prompts) for prompts in new.values()]
                self._phrase_sums.update(
                    {p: part.sum(dim=0) for p, part in zip(new, embeddings.split(sizes), strict=True)}
                )
            mean = sum(self._phrase_sums[p] for p in key) / (len(key) * len(templates()))
            self._f_add[key] = F.normalize(mean, dim=0)
        return self._f_add[key]

    def normality(self, *, group: str | None = None, phrases: str | Sequence[str] | None = None) -> Normality:
        """Resolve and encode one normality: ``group=`` a Table 1 group or ``phrases=`` (:meth:`phrases`)."""
        label, resolved = self.phrases(group=group, phrases=phrases)
        return Normality(label=label, phrases=resolved, f_add=self.normality_feature(resolved))

    @torch.no_grad()
    def suppression_map(
        self, features: NDFeatures, f_add: torch.Tensor, geometry: MapGeometry | None = None
    ) -> torch.Tensor:
        """``A_sup``: Eq. 4 with ``f_add`` for ``f_abn``, on the evaluation grid of a detector's map.

        The probability of the ``f_add`` channel of the softmax over ``{f_nor, f_add}`` (logits upsampled
        to ``features.map_size`` first), combined over layers by :attr:`layer_combine`; then the box the
        detector's map covers (``geometry.region``; the whole image when ``None``) is cut out and
        resized to ``eval_size`` × ``eval_size``.

        Returns:
            ``[B, eval_size, eval_size]`` float32 on CPU.
        """
        text = torch.stack([features.f_nor, f_add.to(features.f_nor)], dim=1)
        sizes = features.image_sizes
        regions = [FULL_IMAGE] * len(sizes) if geometry is None else regions_for(geometry, sizes)
        maps = []
        for start in range(0, len(features), SUPPRESSION_CHUNK):
            part = slice(start, start + SUPPRESSION_CHUNK)
            tokens = [layer[part] for layer in features.patch_tokens]
            full = zero_shot_maps(tokens, features.grid, text, features.map_size, combine=self.layer_combine)
            maps.append(crop_to_region(full, regions[part], self.eval_size).cpu())
        return torch.cat(maps)


def final_map(base: torch.Tensor, suppressions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 6: ``A_final = A ⊙ Π_k (1 − A_sup_k)``.

    Maps are used raw: min-max normalising ``A`` first would change the result, since the product is
    scale-equivariant but not shift-invariant (book: ``method.md``, "Normality addition").

    Args:
        base: ``[B, S, S]`` detector maps on the evaluation grid.
        suppressions: ``[B, S, S]`` suppression maps on the same grid.

    Raises:
        ValueError: If a suppression map's shape differs from ``base``.
    """
    result = base
    for suppression in suppressions:
        if suppression.shape != base.shape:
            raise ValueError(f"suppressions: shape {tuple(suppression.shape)} != base {tuple(base.shape)}")
        result = result * (1 - suppression.to(base))
    return result


class NANDDetector(Detector):
    """A detector with normalities added (Eq. 5); build it with :func:`add_normality`.

    ``predict`` gives ``A ⊙ Π_k (1 − A_sup_k)`` on the ``nd.eval_size`` grid over the wrapped detector's
    region (same :attr:`geometry`), and image score ``max`` of that map.

    Args:
        detector: The detector whose normality is extended.
        nd: ND module computing the suppression maps.
        normalities: The normalities added, in order.
    """

    def __init__(self, detector: Detector, nd: NormalityDetector, normalities: Sequence[Normality]) -> None:
        self.detector = detector
        self.nd = nd
        self.normalities = tuple(normalities)
        self.class_name = nd.class_name
        self.geometry = detector.geometry
        self.name = f"{detector.name}+nand"

    def fit(self, images: Sequence[Image.Image]) -> NANDDetector:
        """Fit the wrapped detector (NAND itself learns nothing)."""
        self.detector.fit(images)
        return self

    def predict(self, images: Sequence[Image.Image]) -> Prediction:
        """Final maps ``[B, 256, 256]`` (Eq. 6) and image scores ``max A_final`` ``[B]``."""
        from nandlib.evaluation import EncodedImages

        return EncodedImages(self.detector, self.nd, images).predict(self.normalities)


def add_normality(
    detector: Detector,
    *,
    group: str | None = None,
    phrases: str | Sequence[str] | None = None,
    nd: NormalityDetector | None = None,
) -> NANDDetector:
    """Eq. 5: ``NAND(detector, normality)``, a detector that treats a normality as normal.

    Args:
        detector: Any map-producing detector, or a :class:`NANDDetector` (normalities then compose:
            ``A ⊙ Π_k (1 − A_sup_k)``).
        group: A Table 1 group of the class (``"thread"``): its shipped phrases.
        phrases: Or your own phrase(s) (``"carpet with a loose thread"``).
        nd: ND module; default: the NANDDetector's own, or one on the detector's
            :meth:`~nandlib.detectors.base.Detector.normality_source` (APRIL-GAN: sharing its forward pass).
            Required for other detectors.

    Raises:
        ValueError: No ND module for a detector that cannot provide one, a class mismatch between the
            detector and the ND module, or a bad normality (see :meth:`NormalityDetector.phrases`).
    """
    if isinstance(detector, NANDDetector) and (nd is None or nd is detector.nd):
        added = detector.nd.normality(group=group, phrases=phrases)
        return NANDDetector(detector.detector, detector.nd, [*detector.normalities, added])
    if nd is None:
        source = detector.normality_source()
        if source is None:
            raise ValueError(f"nd: a NormalityDetector is required to wrap {detector.name!r}")
        nd = NormalityDetector(source)
    if detector.class_name not in (None, nd.class_name):
        raise ValueError(f"nd: built for class {nd.class_name!r}, detector is for {detector.class_name!r}")
    return NANDDetector(detector, nd, [nd.normality(group=group, phrases=phrases)])
