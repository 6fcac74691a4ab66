"""PatchCore (Roth et al., CVPR 2022) as in the official code, IM224 baseline by default.

Official command (``sample_training.sh``): ``-b wideresnet50 -le layer2 -le layer3
--pretrain_embed_dimension 1024 --target_embed_dimension 1024 --anomaly_scorer_num_nn 1
--patchsize 3 sampler -p 0.1 approx_greedy_coreset dataset --resize 256 --imagesize 224 --seed 0``.
Book: ``method.md``, "PatchCore"; deviations are listed in :mod:`nandlib.detectors.patchcore`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from PIL import Image
from pydantic import PositiveInt, field_validator
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torchvision.models import ResNet

from nandlib.cache import FeatureCache
from nandlib.config import Settings
from nandlib.detectors.base import Detector, MapGeometry, Prediction, check_is_fitted
from nandlib.detectors.examples import check_examples, continued_coreset, patch_fractions
from nandlib.detectors.patchcore.coreset import approximate_greedy_coreset, random_projection
from nandlib.detectors.patchcore.features import (
    aggregate_patches,
    check_layers,
    extract_layers,
    image_transform,
    load_backbone,
)
from nandlib.detectors.patchcore.scoring import anomaly_maps, nearest_neighbours, reweighted_scores

# Settings that change the patch features: a saved memory bank only fits a detector that shares them.
_FEATURE_SETTINGS = ("backbone", "layers", "resize", "crop", "pretrain_dim", "target_dim", "patch_size")
CACHE_NAMESPACE = "patchcore"

if TYPE_CHECKING:
    from nandlib.detectors.registry import BuildContext


class PatchCoreSettings(Settings):
    """PatchCore's config; the defaults are the paper's IM224 baseline.

    Attributes:
        backbone: torchvision ResNet-family name.
        weights: ``None`` (random init, seeded), ``"imagenet"`` or a state-dict path.
        layers: ResNet stages aggregated (official: layer2 and layer3).
        resize: Short side after resizing.
        crop: Side of the centre crop.
    """

    backbone: str = "wide_resnet50_2"
    weights: str | None = None
    layers: list[str] = ["layer2", "layer3"]
    resize: PositiveInt = 256
    crop: PositiveInt = 224

    @field_validator("layers")
    @classmethod
    def _known_layers(cls, layers: list[str]) -> list[str]:
        return list(check_layers(layers))


class PatchCore(Detector):
    """PatchCore: a coreset memory bank of locally aggregated mid-level ResNet patch features.

    Args:
        backbone: torchvision ResNet-family name (official: ``"wide_resnet50_2"``) or a ready
            torchvision ``ResNet`` module (used as is, e.g. to share weights with another run).
        weights: For a named backbone: ``None`` (random init, seeded), ``"imagenet"``
            (torchvision ``IMAGENET1K_V1``, downloaded once) or a local state-dict path.
        layers: ResNet stages whose outputs are aggregated; the first sets the patch grid.
        resize: Short side after resizing (bilinear).
        crop: Side of the centre crop; the maps cover this crop (``geometry``).
        pretrain_dim: Per-layer feature dimension after the first adaptive pooling.
        target_dim: Final patch-feature dimension.
        patch_size: Odd side of the local neighbourhood aggregated around each position.
        coreset_ratio: Fraction of training patch features kept in the memory bank, in (0, 1].
        projection_dim: Dimension of the coreset's random projection.
        num_starts: Random starting points of the approximate greedy coreset.
        num_neighbors: ``k``; a patch score is the mean squared distance to its ``k`` nearest
            memory items (official ``--anomaly_scorer_num_nn``).
        score: Image score: ``"max"`` patch score (official) or ``"reweighted"`` (paper Eq. 7).
        reweight_neighbors: ``b`` of Eq. 7 (anomalib's default 9); used by ``score="reweighted"``.
        sigma: Standard deviation of the Gaussian smoothing of the maps, in map pixels.
        seed: Seed of the random backbone init and of the coreset.
        device: Torch device of the backbone, memory bank and searches.
        batch_size: Images per forward pass.
        chunk_size: Query patches per block of nearest-neighbour distances.
        cache: Feature cache for the aggregated patch features of training and test images (``None``:
            extract every time); keyed by the feature settings. Needs a named backbone.

    Attributes:
        memory_bank_: ``[K, target_dim]`` coreset features after :meth:`fit` or :meth:`load`.
        coreset_indices_: Indices of the memory bank rows in the fitted features (after :meth:`fit`;
            ``None`` after :meth:`load`).
        backbone_weights: Provenance of the backbone weights (a file's by path and hash; cache keys and
            saved memory banks use the file's content only, whatever its path).
        transform: Image transform (PIL → normalised tensor).
    """

    kind = "patchcore"
    accepts_examples = True
    Settings = PatchCoreSettings
    name = "patchcore"

    def __init__(
        self,
        backbone: str | ResNet = "wide_resnet50_2",
        weights: str | Path | None = None,
        layers: Sequence[str] = ("layer2", "layer3"),
        resize: int = 256,
        crop: int = 224,
        pretrain_dim: int = 1024,
        target_dim: int = 1024,
        patch_size: int = 3,
        coreset_ratio: float = 0.1,
        projection_dim: int = 128,
        num_starts: int = 10,
        num_neighbors: int = 1,
        score: Literal["max", "reweighted"] = "max",
        reweight_neighbors: int = 9,
        sigma: float = 4.0,
        seed: int = 0,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        chunk_size: int = 1024,
        cache: FeatureCache | None = None,
    ) -> None:
        for label, value in {
            "resize": resize, "crop": crop, "pretrain_dim": pretrain_dim, "target_dim": target_dim,
            "projection_dim": projection_dim, "num_starts": num_starts, "num_neighbors": num_neighbors,
            "reweight_neighbors": reweight_neighbors, "batch_size": batch_size, "chunk_size": chunk_size,
        }.items():  # fmt: skip
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{label}: must be a positive integer, got {value!r}")
        if crop > resize:
            raise ValueError(f"crop: {crop} is larger than resize {resize}")
        if patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(f"patch_size: must be a positive odd integer, got {patch_size!r}")
        if not 0 < coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio: must be in (0, 1], got {coreset_ratio}")
        if score not in ("max", "reweighted"):
            raise ValueError(f"score: must be 'max' or 'reweighted', got {score!r}")
        if sigma < 0:
            raise ValueError(f"sigma: must be >= 0, got {sigma}")
        self.layers = check_layers(layers)
        self.resize, self.crop = resize, crop
        self.pretrain_dim, self.target_dim, self.patch_size = pretrain_dim, target_dim, patch_size
        self.coreset_ratio, self.projection_dim, self.num_starts = coreset_ratio, projection_dim, num_starts
        self.num_neighbors, self.score, self.reweight_neighbors = num_neighbors, score, reweight_neighbors
        self.sigma, self.seed, self.batch_size, self.chunk_size = sigma, seed, batch_size, chunk_size
        self.device = torch.device(device)
        if isinstance(backbone, ResNet):
            if cache is not None:
                raise ValueError("cache: needs a named backbone (weights are part of the key), not a module")
            if weights is not None:
                raise ValueError("weights: only for a named backbone; a ResNet module brings its own")
            self.backbone_name, self.backbone_weights = type(backbone).__name__, "module given by caller"
            self._weights_id = self.backbone_weights
        else:
            self.backbone_name = backbone
            backbone, self.backbone_weights, self._weights_id = load_backbone(backbone, weights, seed)
        self.cache = cache
        # channels-last: the same convolutions, faster in oneDNN on CPU (equal up to float rounding)
        self.backbone = backbone.eval().to(self.device, memory_format=torch.channels_last)
        self.geometry = MapGeometry(resize=resize, crop=crop)
        self.transform = image_transform(resize, crop)

    @classmethod
    def from_settings(cls, settings: PatchCoreSettings, context: BuildContext) -> PatchCore:
        """PatchCore with the unit's seed, device, batch size and cache."""
        return cls(
            backbone=settings.backbone,
            weights=settings.weights,
            layers=settings.layers,
            resize=settings.resize,
            crop=settings.crop,
            seed=context.seed,
            device=context.device,
            batch_size=context.batch_size,
            cache=context.cache,
        )

    def provenance(self) -> dict[str, Any]:
        """Its backbone, weights, layers and input size (resize → crop)."""
        layers = "+".join(self.layers)
        return {
            "weights": f"{self.backbone_name} ({self.backbone_weights}), {layers}, "
            f"{self.resize} → {self.crop} px"
        }

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Official input transform of a batch: ``[B, 3, crop, crop]`` on ``device``."""
        return torch.stack([self.transform(image.convert("RGB")) for image in images]).to(self.device)

    @torch.no_grad()
    def embed_tensor(self, batch: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch features ``[B, h·w, target_dim]`` of a preprocessed batch, and the grid ``(h, w)``."""
        pixels = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        maps = extract_layers(self.backbone, pixels, self.layers)
        features = aggregate_patches(maps, self.patch_size, self.pretrain_dim, self.target_dim)
        return features, tuple(maps[0].shape[-2:])

    def embed_images(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, tuple[int, int]]:
        """:meth:`embed_tensor` of one batch of images, read from :attr:`cache` where present."""
        if self.cache is None:
            return self.embed_tensor(self.preprocess(images))

        def compute(batch: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
            features, grid = self.embed_tensor(self.preprocess(batch))
            return {"features": features, "grid": torch.tensor([grid] * len(batch))}

        out = self.cache.get_or_compute(CACHE_NAMESPACE, self._feature_settings(), images, compute)
        height, width = out["grid"][0].tolist()
        return out["features"].to(self.device), (height, width)

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Patch features of all ``images``, ``[len(images) · h · w, target_dim]``, in batches.

        Raises:
            ValueError: If ``images`` is empty.
        """
        if len(images) == 0:
            raise ValueError("images: need at least one image")
        features = None
        for start in range(0, len(images), self.batch_size):
            batch, _ = self.embed_images(images[start : start + self.batch_size])
            if features is None:  # one allocation for the whole set, filled batch by batch
                per_image = batch.shape[1]
                features = torch.empty(len(images) * per_image, self.target_dim, device=self.device)
            features[start * per_image : (start + len(batch)) * per_image] = batch.flatten(0, 1)
        return features

    def fit(self, images: Sequence[Image.Image]) -> PatchCore:
        """Build the memory bank from normal (``train/good``) images.

        Raises:
            ValueError: If ``images`` is empty.
        """
        return self.fit_features(self.embed(images))

    def fit_features(
        self,
        features: torch.Tensor,
        *,
        projection: torch.Tensor | None = None,
        start_indices: torch.Tensor | None = None,
    ) -> PatchCore:
        """Build the memory bank from patch features ``[N, target_dim]`` (e.g. from :meth:`embed`).

        ``projection`` and ``start_indices`` override the seeded coreset randomness, e.g. to replay
        another implementation's draws (see :func:`approximate_greedy_coreset`).
        """
        features = features.to(self.device)
        indices = approximate_greedy_coreset(
            features,
            self.coreset_ratio,
            projection_dim=self.projection_dim,
            num_starts=self.num_starts,
            seed=self.seed,
            projection=projection,
            start_indices=start_indices,
        )
        self.memory_bank_ = features[indices].contiguous()
        self.coreset_indices_ = indices.cpu()
        return self

    def predict(self, images: Sequence[Image.Image]) -> Prediction:
        """Anomaly maps ``[B, crop, crop]`` and image scores ``[B]`` of a batch.

        A patch score is the mean squared distance to the ``num_neighbors`` nearest memory items;
        the image score is the largest patch score (or paper Eq. 7 with ``score="reweighted"``); the
        map is the patch-score grid resized bilinearly to the crop and Gaussian-smoothed.

        Raises:
            NotFittedError: Before :meth:`fit` or :meth:`load`.
            ValueError: If ``images`` is empty.
        """
        check_is_fitted(self, "memory_bank_", "PatchCore: no memory bank; call fit(images) or load(path)")
        if len(images) == 0:
            raise ValueError("images: need at least one image")
        maps, scores = [], []
        for start in range(0, len(images), self.batch_size):
            features, (height, width) = self.embed_images(images[start : start + self.batch_size])
            distances, nearest = nearest_neighbours(
                features.flatten(0, 1), self.memory_bank_, k=self.num_neighbors, chunk_size=self.chunk_size
            )
            patch_scores = distances.mean(1).view(len(features), height * width)
            if self.score == "max":
                scores.append(patch_scores.max(1).values)
            else:
                nearest = nearest[:, 0].view(len(features), height * width)
                bank, support = self.memory_bank_, self.reweight_neighbors
                scores.append(reweighted_scores(features, patch_scores, nearest, bank, support))
            maps.append(anomaly_maps(patch_scores.view(-1, height, width), self.crop, self.sigma))
        return Prediction(maps=torch.cat(maps), scores=torch.cat(scores).float().cpu())

    def add_normal_examples(
        self, images: Sequence[Image.Image], masks: Sequence[Any] | None = None, *, coreset: bool = False
    ) -> PatchCore:
        """The example route: the examples' patch features join the memory bank (book:
        ``examples_vs_text.md``). A patch score is a nearest distance, so no score can rise.

        Args:
            images: Example images of the normality to add.
            masks: Defect masks ``[H, W]``, one per image: only patches whose cell (in the crop) touches
                the defect join. ``None`` (default): every patch joins.
            coreset: ``False`` (default): all chosen patches join. ``True``: only the
                ``int(n · coreset_ratio)`` that the greedy coreset rule, continued from the bank, selects
                (:func:`~nandlib.detectors.examples.continued_coreset`).

        Raises:
            NotFittedError: Before :meth:`fit` or :meth:`load`.
            ValueError: No images, or masks that do not match them.
        """
        check_is_fitted(self, "memory_bank_", "PatchCore: no memory bank; call fit(images) or load(path)")
        checked = check_examples(images, masks)
        parts = [
            self.embed_images(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)
        ]
        features = torch.cat([part[0] for part in parts])  # [K, h·w, D]
        if checked is None:
            new = features.flatten(0, 1)
        else:
            touched = patch_fractions(checked, self.geometry, parts[0][1]) > 0
            new = features[touched.to(features.device)]
        if coreset:
            dim = new.shape[1]
            projection = (
                None if dim == self.projection_dim else random_projection(dim, self.projection_dim, self.seed)
            )
            new = new[continued_coreset(self.memory_bank_, new, self.coreset_ratio, projection)]
        self.memory_bank_ = torch.cat([self.memory_bank_, new]).contiguous()
        self.examples_added_ = getattr(self, "examples_added_", 0) + len(new)
        return self

    def _feature_settings(self) -> dict[str, str]:
        values = {name: getattr(self, name) for name in _FEATURE_SETTINGS if name != "backbone"}
        values["backbone"] = f"{self.backbone_name} ({self._weights_id})"
        return {name: json.dumps(value) for name, value in values.items()}

    def save(self, path: str | Path) -> None:
        """Write the memory bank and the feature settings it depends on to a safetensors file.

        Raises:
            NotFittedError: Before :meth:`fit`.
        """
        check_is_fitted(self, "memory_bank_", msg="PatchCore: no memory bank; call fit(images) first")
        save_file({"memory_bank": self.memory_bank_.cpu()}, str(path), metadata=self._feature_settings())

    def load(self, path: str | Path) -> PatchCore:
        """Read a memory bank written by :meth:`save` by a detector with the same feature settings.

        Raises:
            FileNotFoundError: No file at ``path``.
            ValueError: The file was made with other feature settings (backbone, weights, layers, sizes).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path: no memory bank file at {path}")
        with safe_open(str(path), framework="pt") as handle:
            saved = handle.metadata() or {}
        mine = self._feature_settings()
        differing = sorted(name for name in mine if saved.get(name) != mine[name])
        if differing:
            details = "; ".join(
                f"{name}: file {saved.get(name)}, detector {mine[name]}" for name in differing
            )
            raise ValueError(f"memory bank {path} was built with other feature settings: {details}")
        self.memory_bank_ = load_file(str(path))["memory_bank"].to(self.device)
        self.coreset_indices_ = None
        return self
