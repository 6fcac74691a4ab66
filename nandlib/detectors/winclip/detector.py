"""WinCLIP and WinCLIP+ (Jeong et al., CVPR 2023) as a :class:`~nandlib.detectors.base.Detector`.

A faithful re-implementation of anomalib's ``WinClipModel`` (book: ``protocol.md``, "WinCLIP";
deviations listed there): windows of 2 × 2 and 3 × 3 patches, the compositional prompt ensemble
with mean-of-raw text embeddings, temperature 0.07, harmonic aggregation, and for ``k_shot > 0``
a reference memory of window and patch embeddings of ``k`` normal images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import NonNegativeInt

from nandlib.backbones import ClipBackbone
from nandlib.cache import FeatureCache
from nandlib.config import ClipSpec, Settings
from nandlib.detectors.base import Detector, MapGeometry, Prediction, check_is_fitted
from nandlib.detectors.examples import check_examples, patch_fractions
from nandlib.detectors.winclip.prompts import prompt_ensemble
from nandlib.detectors.winclip.scoring import few_shot_map, make_window_masks, zero_shot_scores
from nandlib.detectors.winclip.windows import ImageEmbeddings, encode_images, patch_grid

if TYPE_CHECKING:
    from nandlib.detectors.registry import BuildContext

CACHE_NAMESPACE = "winclip"


class WinCLIPSettings(Settings):
    """WinCLIP's config: its CLIP (paper: ViT-B-16-plus-240, laion400m_e31) and ``k`` (0, 1, 5)."""

    clip: ClipSpec = ClipSpec(model="ViT-B-16-plus-240")
    shots: NonNegativeInt = 0


class WinCLIP(Detector):
    """Zero-shot WinCLIP (``k_shot=0``) or few-shot WinCLIP+ (``k_shot > 0``).

    The paper's model is ``WinCLIP(load_clip("ViT-B-16-plus-240", pretrained="laion400m_e31"),
    class_name)``. Input is ``backbone.preprocess`` (squash to the model's size, bicubic, CLIP
    normalisation), so maps cover the whole image (``geometry.crop is None``).

    Args:
        backbone: open_clip ViT with class-token pooling; its device is used throughout.
        class_name: Object name put raw into the prompts (``"metal_nut"``, not ``"metal nut"``).
        k_shot: Number of normal reference images taken in :meth:`fit`; 0 is zero-shot.
        scales: Window sides in patches.
        temperature: Softmax temperature of the class probabilities.
        seed: Seed of the choice of reference images in :meth:`fit`.
        batch_size: Images per visual forward.
        window_batch_size: Window sequences per transformer call (speed only).
        cache: Feature cache for the image, window and patch embeddings of test and reference images
            (``None``: encode every time); keyed by backbone, scales and patch grid.

    Attributes:
        reference_indices_: Indices (into the images given to :meth:`fit`) of the references,
            sorted; ``()`` after a zero-shot ``fit``; absent before ``fit``.
        references_: Embeddings of the references (``None`` for zero-shot); absent before ``fit``.

    Raises:
        ValueError: On an empty class name, negative ``k_shot``, non-positive temperature or
            batch sizes, no scales, or a scale larger than the patch grid.
    """

    kind = "winclip"
    accepts_examples = True
    Settings = WinCLIPSettings

    def __init__(
        self,
        backbone: ClipBackbone,
        class_name: str,
        k_shot: int = 0,
        scales: Sequence[int] = (2, 3),
        temperature: float = 0.07,
        seed: int = 0,
        batch_size: int = 8,
        window_batch_size: int = 4096,
        cache: FeatureCache | None = None,
    ) -> None:
        if not isinstance(class_name, str) or not class_name.strip():
            raise ValueError("class_name: must be a non-empty string")
        if k_shot < 0:
            raise ValueError(f"k_shot: must be >= 0, got {k_shot}")
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        if batch_size < 1 or window_batch_size < 1:
            raise ValueError(
                f"batch_size ({batch_size}) and window_batch_size ({window_batch_size}) must be >= 1"
            )
        if len(scales) == 0:
            raise ValueError("scales: need at least one window scale")
        self.backbone = backbone
        self.class_name = class_name
        self.k_shot = int(k_shot)
        self.scales = tuple(int(scale) for scale in scales)
        self.temperature = float(temperature)
        self.seed = seed
        self.batch_size = batch_size
        self.window_batch_size = window_batch_size
        self.cache = cache
        self.name = f"winclip-{self.k_shot}"  # as in the profiles: winclip-0, winclip-1, winclip-5
        self.geometry = MapGeometry(resize=backbone.image_size)
        self.grid = patch_grid(backbone.model.visual)
        self.masks = [make_window_masks(self.grid, scale).to(backbone.device) for scale in self.scales]
        self._text: torch.Tensor | None = None

    @classmethod
    def from_settings(cls, settings: WinCLIPSettings, context: BuildContext) -> WinCLIP:
        """WinCLIP on its own CLIP, with the unit's class, seed, batch size and cache."""
        return cls(
            context.clip(settings.clip),
            context.class_name,
            k_shot=settings.shots,
            seed=context.seed,
            batch_size=context.batch_size,
            cache=context.cache,
        )

    @classmethod
    def default_name(cls, settings: WinCLIPSettings) -> str:
        """``winclip-K``, as the paper's tables name the k-shot runs."""
        return f"winclip-{settings.shots}"

    def provenance(self) -> dict[str, Any]:
        """Its CLIP's weights and, once fitted, the references drawn."""
        record: dict[str, Any] = {"weights": f"{self.backbone.model_name} ({self.backbone.weights})"}
        if hasattr(self, "reference_indices_"):
            record["reference_indices"] = list(self.reference_indices_)
        return record

    @property
    def text_embeddings(self) -> torch.Tensor:
        """``[2, D]``: mean of the raw normal, then anomalous, sentence embeddings (computed once)."""
        if self._text is None:
            normal, anomalous = prompt_ensemble(self.class_name)
            means = [self.backbone.encode_text(group).mean(dim=0) for group in (normal, anomalous)]
            self._text = torch.stack(means)
        return self._text

    def fit(self, images: Sequence[Image.Image]) -> WinCLIP:
        """Take ``k_shot`` of the normal images as references and embed them (no-op when ``k_shot=0``).

        References are ``sorted(numpy.random.default_rng(seed).choice(len(images), k_shot,
        replace=False))``: drawn without replacement, reproducible for a fixed image order. Only
        the chosen images are read from ``images``.

        Args:
            images: The class's normal training images (``train/good``), in a fixed order.

        Returns:
            ``self``.

        Raises:
            ValueError: If ``k_shot > 0`` and ``images`` is empty or has fewer than ``k_shot`` images.
        """
        if self.k_shot == 0:
            self.reference_indices_ = ()
            self.references_ = None
            return self
        if len(images) == 0:
            raise ValueError(f"images: WinCLIP k_shot={self.k_shot} needs normal images to fit, got none")
        if self.k_shot > len(images):
            raise ValueError(f"k_shot={self.k_shot} exceeds the {len(images)} images given to fit")
        chosen = np.random.default_rng(self.seed).choice(len(images), size=self.k_shot, replace=False)
        self.reference_indices_ = tuple(sorted(int(index) for index in chosen))
        self.references_ = self._embed([images[index] for index in self.reference_indices_])
        return self

    def predict(self, images: Sequence[Image.Image]) -> Prediction:
        """Anomaly maps at the model's input size and native image scores.

        Zero-shot: maps are the multi-scale harmonic means, scores the full-image class scores.
        Few-shot: both are averaged with the few-shot map and its maximum on the patch grid.

        Raises:
            ValueError: If ``images`` is empty.
            NotFittedError: Before :meth:`fit`.
        """
        if len(images) == 0:
            raise ValueError("images: need at least one image to predict")
        check_is_fitted(self, "reference_indices_", f"WinCLIP k_shot={self.k_shot}: call fit(images) first")
        maps, scores = [], []
        for start in range(0, len(images), self.batch_size):
            batch_maps, batch_scores = self._predict_batch(images[start : start + self.batch_size])
            maps.append(batch_maps)
            scores.append(batch_scores)
        return Prediction(maps=torch.cat(maps), scores=torch.cat(scores))

    def add_normal_examples(
        self, images: Sequence[Image.Image], masks: Sequence[Any] | None = None
    ) -> WinCLIP:
        """The example route: the examples' windows and patches join WinCLIP+'s reference memory.

        The visual association score (WinCLIP Eq. 4) is a smallest distance over the pooled memory, so the
        few-shot map of no image can rise. A zero-shot WinCLIP becomes a WinCLIP+ whose memory is the
        examples alone (maps and scores then average the zero- and few-shot parts, as for ``k_shot > 0``).

        Args:
            images: Example images of the normality to add.
            masks: Defect masks ``[H, W]``, one per image: only patches touching the defect, and windows
                holding such a patch, join. ``None`` (default): all of them join.

        Raises:
            NotFittedError: Before :meth:`fit`.
            ValueError: No images, or masks that do not match them.
        """
        check_is_fitted(self, "reference_indices_", f"WinCLIP k_shot={self.k_shot}: call fit(images) first")
        checked = check_examples(images, masks)
        new = self._embed(images)
        patches, windows = new.patches, new.windows
        if checked is not None:
            touched = (patch_fractions(checked, self.geometry, self.grid) > 0).to(patches.device)
            patches = patches[touched]
            windows = [w[touched[:, mask].any(dim=1)] for w, mask in zip(windows, self.masks, strict=True)]
        old = self.references_
        if old is not None:
            patches = torch.cat(
                [old.patches.reshape(-1, patches.shape[-1]), patches.reshape(-1, patches.shape[-1])]
            )
            windows = [
                torch.cat([o.reshape(-1, w.shape[-1]), w.reshape(-1, w.shape[-1])])
                for o, w in zip(old.windows, windows, strict=True)
            ]
        image = new.image if old is None else torch.cat([old.image, new.image])
        self.references_ = ImageEmbeddings(image=image, windows=list(windows), patches=patches)
        return self

    def _embed(self, images: Sequence[Image.Image]) -> ImageEmbeddings:
        """Embeddings of images, ``batch_size`` at a time (through :attr:`cache` when set)."""
        starts = range(0, len(images), self.batch_size)
        parts = [self._embed_batch(images[start : start + self.batch_size]) for start in starts]
        return ImageEmbeddings(
            image=torch.cat([part.image for part in parts]),
            windows=[torch.cat(scale) for scale in zip(*(part.windows for part in parts), strict=True)],
            patches=torch.cat([part.patches for part in parts]),
        )

    def _embed_batch(self, images: Sequence[Image.Image]) -> ImageEmbeddings:
        def compute(batch: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
            with self.backbone.autocast():
                pixels = self.backbone.preprocess(batch)
                out = encode_images(self.backbone.model.visual, pixels, self.masks, self.window_batch_size)
            windows = {f"windows{scale}": w for scale, w in zip(self.scales, out.windows, strict=True)}
            return {"image": out.image, "patches": out.patches, **windows}

        if self.cache is None:
            out = compute(images)
        else:
            settings = self.backbone.feature_settings() | {"scales": self.scales, "grid": self.grid}
            out = self.cache.get_or_compute(CACHE_NAMESPACE, settings, images, compute)
        out = {name: tensor.to(self.backbone.device) for name, tensor in out.items()}
        windows = [out[f"windows{scale}"] for scale in self.scales]
        return ImageEmbeddings(image=out["image"], windows=windows, patches=out["patches"])

    def _predict_batch(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps ``[B, S, S]`` and scores ``[B]`` (float32, CPU) of one batch."""
        embeddings = self._embed(images)
        text = self.text_embeddings
        scores, grid_maps = zero_shot_scores(embeddings, text, self.masks, self.grid, self.temperature)
        if self.references_ is not None:
            few_shot = few_shot_map(embeddings, self.references_, self.masks, self.grid)
            grid_maps = (grid_maps + few_shot) / 2
            scores = (scores + few_shot.amax(dim=(-2, -1))) / 2
        size = self.backbone.image_size
        maps = F.interpolate(grid_maps[:, None], size=(size, size), mode="bilinear", align_corners=False)
        return maps[:, 0].float().cpu(), scores.float().cpu()
