"""APRIL-GAN zero-shot detector (Chen et al., arXiv 2305.17382), step by step as the official code.

Pipeline (ByChelsea/VAND-APRIL-GAN ``test.py``, book: ``method.md``, "APRIL-GAN"):

1. squash the image to the backbone's size (518) and run CLIP's vision tower once, keeping the raw
   residual stream after blocks 6, 12, 18, 24 (ViT-L-14-336; L/4 ... L in general);
2. per layer, drop CLS, apply that layer's linear adapter and L2-normalise the patch tokens;
3. logits ``100 · t @ [f_nor, f_abn]`` (fixed 100, not CLIP's learned scale), reshaped to the patch grid
   and upsampled bilinear (``align_corners=True``) to the input size *before* the softmax;
4. abnormal-channel probability per layer, **summed** over layers (Eq. 4; range ``[0, n_layers]``), no
   smoothing. The native image score is the abnormal probability of the CLS embedding vs the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from PIL import Image

from nandlib.adapters import Adapters
from nandlib.backbones import ClipBackbone
from nandlib.cache import FeatureCache
from nandlib.detectors.base import Detector, MapGeometry, Prediction
from nandlib.detectors.examples import check_examples, patch_fractions
from nandlib.prompts import aprilgan_prompts

if TYPE_CHECKING:
    from nandlib.detectors.registry import BuildContext
    from nandlib.nand import NDFeatures, NormalityDetector

CACHE_NAMESPACE = "clip-layers"  # raw block outputs + image embedding, before the adapters
LOGIT_SCALE = 100.0  # APRIL-GAN's fixed temperature, for maps and image scores alike
LAYER_COMBINES = ("sum", "mean")


@dataclass(frozen=True)
class AprilGANFeatures:
    """What one forward pass gives, reusable by NAND's ND module (computed once per image).

    Attributes:
        patch_tokens: Per layer ``[B, N, D]`` projected, L2-normalised patch tokens (row-major grid).
        image_embedding: ``[B, D]`` L2-normalised CLIP image embedding.
        grid: Patch grid ``(rows, columns)``; ``rows * columns == N``.
        map_size: ``(height, width)`` the maps are upsampled to (the backbone's input size).
        image_sizes: Original ``(width, height)`` of each image (to place detector crops).
        raw_tokens: Per layer ``[B, N, W]`` unprojected patch tokens (CLS dropped), kept only when the
            model holds a few-shot memory (:meth:`AprilGAN.add_normal_examples`); else ``None``.
    """

    patch_tokens: tuple[torch.Tensor, ...]
    image_embedding: torch.Tensor
    grid: tuple[int, int]
    map_size: tuple[int, int]
    image_sizes: tuple[tuple[int, int], ...]
    raw_tokens: tuple[torch.Tensor, ...] | None = None


def zero_shot_maps(
    patch_tokens: Sequence[torch.Tensor],
    grid: tuple[int, int],
    text_features: torch.Tensor,
    size: tuple[int, int],
    combine: str = "sum",
) -> torch.Tensor:
    """Eq. 4: per layer, softmax over upsampled logits against two text features; channel 1 combined.

    Args:
        patch_tokens: Per layer ``[B, N, D]`` unit patch features.
        grid: ``(rows, columns)`` with ``rows * columns == N``.
        text_features: ``[D, 2]``; column 0 the reference state (``f_nor``), column 1 the one whose
            probability is mapped (``f_abn`` for APRIL-GAN, ``f_add`` for NAND's ND module).
        size: ``(height, width)`` to upsample the logits to, before the softmax.
        combine: ``"sum"`` over layers (APRIL-GAN) or ``"mean"``.

    Returns:
        ``[B, height, width]`` maps on the tokens' device.
    """
    if combine not in LAYER_COMBINES:
        raise ValueError(f"layer_combine: expected one of {LAYER_COMBINES}, got {combine!r}")
    rows, cols = grid
    # A two-way softmax is sigmoid(l1 - l0), and bilinear upsampling is linear: upsampling the one logit
    # difference gives the same probabilities as upsampling both logits (half the work, no softmax).
    difference = text_features[:, 1] - text_features[:, 0]
    total = None
    for tokens in patch_tokens:
        logits = LOGIT_SCALE * tokens @ difference.to(tokens)  # [B, N]
        logits = F.interpolate(
            logits.reshape(-1, 1, rows, cols), size=size, mode="bilinear", align_corners=True
        )
        probability = logits[:, 0].sigmoid()
        total = probability if total is None else total + probability
    return total if combine == "sum" else total / len(patch_tokens)


def few_shot_maps(
    raw_tokens: Sequence[torch.Tensor],
    memory: Sequence[torch.Tensor],
    grid: tuple[int, int],
    size: tuple[int, int],
) -> torch.Tensor:
    """APRIL-GAN's few-shot map (official ``few_shot.py``, ``test.py``): per layer, the smallest cosine
    distance ``1 − cos`` of each unprojected patch token to that layer's memory, on the patch grid,
    upsampled bilinear (``align_corners=True``) to ``size``, summed over layers.

    Args:
        raw_tokens: Per layer ``[B, N, W]`` unprojected patch tokens.
        memory: Per layer ``[M, W]`` unprojected patch tokens of the memory.
        grid: ``(rows, columns)`` with ``rows * columns == N``.
        size: ``(height, width)`` of the maps.

    Returns:
        ``[B, height, width]`` on the tokens' device.
    """
    rows, cols = grid
    total = None
    for tokens, bank in zip(raw_tokens, memory, strict=True):
        bank = F.normalize(bank.float(), dim=-1)
        distance = torch.cat(
            [1 - (F.normalize(t.float(), dim=-1) @ bank.T).amax(dim=-1) for t in tokens.split(1)]
        )
        grid_map = F.interpolate(
            distance.reshape(-1, 1, rows, cols), size=size, mode="bilinear", align_corners=True
        )
        total = grid_map[:, 0] if total is None else total + grid_map[:, 0]
    return total


def text_probability(image_embedding: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Probability of column 1 of ``text_features`` for unit image embeddings ``[B, D]`` (scale 100)."""
    return (LOGIT_SCALE * image_embedding @ text_features.to(image_embedding)).softmax(dim=-1)[:, 1]


class AprilGAN(Detector):
    """APRIL-GAN, zero-shot: CLIP + per-layer linear adapters + APRIL-GAN's prompt ensemble.

    The paper's model is ``AprilGAN(load_clip("ViT-L-14-336", pretrained="openai", image_size=518),
    class_name, adapters="visa_pretrained.pth")``. Without ``adapters`` the linear layers are random
    (seeded), which is what tests and the offline profile use.

    Args:
        backbone: CLIP backbone (exact GELU, see :func:`nandlib.backbones.load_clip`).
        class_name: Class name inserted raw into the prompts (``"metal_nut"``).
        adapters: An :class:`~nandlib.adapters.Adapters` to share, a checkpoint path in the authors'
            format, or ``None`` for random layers.
        layers: Blocks to read (from 1); default ``backbone.default_layers()``. Ignored when
            ``adapters`` is an ``Adapters`` (it carries its layers).
        seed: Seed of random adapters.
        batch_size: Images per forward pass.
        cache: Feature cache for the backbone's outputs (``None``: encode every time). Entries hold the
            raw block outputs *before* the adapters, keyed by backbone and layers, so they are shared with
            every ND module and APRIL-GAN on that backbone whatever their linear layers.

    Attributes:
        geometry: ``MapGeometry(resize=backbone.image_size)``: squash, no crop; maps cover the image.
    """

    kind = "aprilgan"
    accepts_examples = True
    name = "aprilgan"
    example_memory_: tuple[torch.Tensor, ...] | None = None

    @classmethod
    def from_settings(cls, settings: Any, context: BuildContext) -> AprilGAN:
        """The ND module's own APRIL-GAN (its CLIP and linear layers are the unit's ``nd`` config)."""
        return context.nd_aprilgan

    def normality_source(self) -> AprilGAN:
        """Itself: its backbone, adapters and ``f_nor`` make the ND module (Eq. 4 with ``f_add``)."""
        return self

    def predict_with_nd(
        self, images: Sequence[Image.Image], nd: NormalityDetector
    ) -> tuple[Prediction, NDFeatures]:
        """One forward pass for both when ``nd`` runs on this model's backbone and adapters."""
        if nd.aprilgan.backbone is not self.backbone or nd.aprilgan.adapters is not self.adapters:
            return super().predict_with_nd(images, nd)
        features = self.features(images)
        return self.predict_from_features(features), nd.features_from(features)

    def provenance(self) -> dict[str, Any]:
        """Its CLIP's and linear layers' weights."""
        weights = f"{self.backbone.model_name} ({self.backbone.weights}); adapters {self.adapters.weights}"
        return {"weights": weights}

    def __init__(
        self,
        backbone: ClipBackbone,
        class_name: str,
        *,
        adapters: Adapters | str | Path | None = None,
        layers: Sequence[int] | None = None,
        seed: int = 0,
        batch_size: int = 8,
        cache: FeatureCache | None = None,
    ) -> None:
        if not isinstance(class_name, str) or not class_name.strip():
            raise ValueError("class_name: must be a non-empty string")
        self.backbone = backbone
        self.cache = cache
        self.class_name = class_name
        self.batch_size = batch_size
        self.geometry = MapGeometry(resize=backbone.image_size)
        if not isinstance(adapters, Adapters):
            chosen = tuple(layers) if layers is not None else backbone.default_layers()
            built = Adapters(chosen, backbone.vision_width, backbone.embed_dim, seed=seed)
            adapters = built.load(adapters) if adapters is not None else built
        if any(not 1 <= layer <= backbone.n_blocks for layer in adapters.layers):
            raise ValueError(f"layers: {adapters.layers} must lie within 1..{backbone.n_blocks}")
        first = adapters.fc[0]
        if (first.in_features, first.out_features) != (backbone.vision_width, backbone.embed_dim):
            raise ValueError(
                f"adapters: map {first.in_features} -> {first.out_features}, backbone needs "
                f"{backbone.vision_width} -> {backbone.embed_dim}"
            )
        self.adapters = adapters.to(backbone.device)

    @cached_property
    def text_features(self) -> torch.Tensor:
        """``[D, 2]``: ``f_nor`` (column 0) and ``f_abn`` (column 1) of the class, Eq. 3 each."""
        normal, abnormal = aprilgan_prompts(self.class_name)
        return torch.stack([self.backbone.text_feature(normal), self.backbone.text_feature(abnormal)], dim=1)

    @torch.no_grad()
    def features(self, images: Sequence[Image.Image]) -> AprilGANFeatures:
        """Run the vision tower once per image and project the chosen layers (steps 1–2).

        Args:
            images: RGB images of any size (squashed to the backbone's input size).
        """
        if len(images) == 0:
            raise ValueError("images: need at least one image")
        layers = self.adapters.layers
        per_layer: list[list[torch.Tensor]] = [[] for _ in layers]
        raw: list[list[torch.Tensor]] = [[] for _ in layers]
        embeddings = []
        for start in range(0, len(images), self.batch_size):
            embedding, tokens = self.encode(images[start : start + self.batch_size])
            embeddings.append(F.normalize(embedding, dim=-1))
            if self.example_memory_ is not None:  # unprojected, for the few-shot map
                for bucket, layer in zip(raw, tokens, strict=True):
                    bucket.append(layer[:, 1:, :])
            for bucket, projected in zip(per_layer, self.adapters(tokens), strict=True):
                bucket.append(projected)
        size = self.backbone.image_size
        return AprilGANFeatures(
            patch_tokens=tuple(torch.cat(bucket) for bucket in per_layer),
            image_embedding=torch.cat(embeddings),
            grid=self.backbone.grid_size,
            map_size=(size, size),
            image_sizes=tuple(im.size for im in images),
            raw_tokens=tuple(torch.cat(bucket) for bucket in raw)
            if self.example_memory_ is not None
            else None,
        )

    def add_normal_examples(
        self, images: Sequence[Image.Image], masks: Sequence[Any] | None = None
    ) -> AprilGAN:
        """The example route: the examples' unprojected patch tokens join APRIL-GAN's few-shot memory.

        As the official few-shot mode (``few_shot.py``): one memory per layer of the adapters' layers
        (raw block outputs, CLS dropped, before the linear layers); the map becomes the zero-shot map plus
        :func:`few_shot_maps`. Deviation: the image score stays the CLS text probability (the official
        ``0.5 · (text + min-max of max map over the test set)`` needs the whole test set).

        Args:
            images: Example images of the normality to add.
            masks: Defect masks ``[H, W]``, one per image: only patches touching the defect join.
                ``None`` (default): every patch joins.

        Raises:
            ValueError: No images, or masks that do not match them.
        """
        checked = check_examples(images, masks)
        parts = [
            self.encode(images[i : i + self.batch_size])[1] for i in range(0, len(images), self.batch_size)
        ]
        layers = [torch.cat(layer)[:, 1:, :] for layer in zip(*parts, strict=True)]  # [K, N, W] per layer
        if checked is None:
            new = [layer.flatten(0, 1) for layer in layers]
        else:
            touched = (patch_fractions(checked, self.geometry, self.backbone.grid_size) > 0).to(
                layers[0].device
            )
            new = [layer[touched] for layer in layers]
        old = self.example_memory_
        self.example_memory_ = tuple(
            new if old is None else [torch.cat(pair) for pair in zip(old, new, strict=True)]
        )
        return self

    @torch.no_grad()
    def encode(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Raw image embedding ``[B, D]`` and block outputs ``[B, 1 + N, W]`` per layer, on ``device``.

        Read from :attr:`cache` where present (step 1 only; the adapters run on every call).
        """
        layers = self.adapters.layers

        def compute(batch: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
            embedding, tokens = self.backbone.encode_image_layers(self.backbone.preprocess(batch), layers)
            return {"embedding": embedding, **{f"layer{n}": t for n, t in zip(layers, tokens, strict=True)}}

        if self.cache is None:
            out = compute(images)
        else:
            settings = self.backbone.feature_settings() | {"layers": list(layers)}
            out = self.cache.get_or_compute(CACHE_NAMESPACE, settings, images, compute)
        device = self.backbone.device
        return out["embedding"].to(device), [out[f"layer{n}"].to(device) for n in layers]

    @torch.no_grad()
    def predict_from_features(self, features: AprilGANFeatures) -> Prediction:
        """Maps (Eq. 4, summed over layers) and native image scores from precomputed features."""
        text = self.text_features
        maps = zero_shot_maps(features.patch_tokens, features.grid, text, features.map_size, combine="sum")
        if self.example_memory_ is not None:
            if features.raw_tokens is None:
                raise ValueError("features: encoded before examples were added; call features(images) again")
            maps = maps + few_shot_maps(
                features.raw_tokens, self.example_memory_, features.grid, features.map_size
            )
        scores = text_probability(features.image_embedding, text)
        return Prediction(maps=maps.float().cpu(), scores=scores.float().cpu())

    def predict(self, images: Sequence[Image.Image]) -> Prediction:
        """Anomaly maps ``[B, S, S]`` (range ``[0, n_layers]``) and CLS-text image scores ``[B]``."""
        return self.predict_from_features(self.features(images))
