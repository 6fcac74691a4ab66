"""Train APRIL-GAN's linear layers with the authors' recipe, on any CLIP and any dataset in MVTec AD's layout.

Book: ``method.md``, "APRIL-GAN" (training the linear layers). As ByChelsea/VAND-APRIL-GAN ``train.py``:
CLIP is frozen; per chosen block, a ``Linear`` maps the patch tokens to the joint space; per layer the
two-channel map ``softmax(upsample(100 · t @ [f_nor, f_abn]))`` of Eq. 4 (upsampled before the softmax)
is compared with the ground-truth mask by focal loss (γ = 2, on the probabilities) plus binary dice loss on
the abnormal channel, summed over layers; Adam, lr 1e-3, betas (0.5, 0.999). The training images are the
auxiliary dataset's *test* split (good and defect images, with pixel masks), as the authors train on VisA to
test on MVTec AD. Checkpoints use the authors' format (:meth:`nandlib.adapters.Adapters.save`).

Our addition, off by default (``normality_weight=0``; named "normality loss" in the book): a second term
trains the map ``[f_nor, f_add(g)]`` (NAND's ND module, Eq. 4 with ``f_add``) to fire exactly on the mask
of defect type ``g`` and nowhere on other defects, ``g`` drawn per image among its class's types.
Our other addition, also off by default (``init="projection"``; the toy world uses it): the layers start
from CLIP's own patch projection instead of at random (:func:`init_from_projection`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nandlib.adapters import Adapters
from nandlib.backbones import ClipBackbone
from nandlib.data.classes import GOOD
from nandlib.detectors.aprilgan import LOGIT_SCALE
from nandlib.prompts import aprilgan_prompts, normality_prompts

INITS = ("random", "projection")
PROJECTION_SAMPLE = 64  # about this many images (every k-th) give the typical LayerNorm scale


@dataclass(frozen=True)
class AdapterTraining:
    """The authors' hyper-parameters (VisA run of ``train.sh``), our optional normality loss and start.

    Attributes:
        epochs: Passes over the dataset (15 for VisA).
        batch_size: Images per step (8).
        lr: Adam learning rate (1e-3).
        betas: Adam betas ((0.5, 0.999)).
        seed: Seed of initialisation and shuffling (the authors' ``setup_seed(111)``).
        normality_weight: Weight of our normality loss (0: the official recipe).
        init: ``"random"`` (the authors' ``nn.Linear`` default) or ``"projection"`` (our addition: start
            from CLIP's own patch projection, :func:`init_from_projection`).
    """

    epochs: int = 15
    batch_size: int = 8
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    seed: int = 111
    normality_weight: float = 0.0
    init: str = "random"

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init: expected one of {INITS}, got {self.init!r}")


def focal_loss(probabilities: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (authors' variant) of probabilities ``[B, 2, H, W]`` against a boolean mask ``[B, H, W]``.

    The one-hot target is clamped to ``[1e-5, 1 - 1e-5]``, ``p_t = Σ one_hot · p + 1e-5``, and the loss is
    ``mean(-(1 - p_t)^γ · log p_t)``.
    """
    one_hot = torch.stack([~target, target], dim=1).float().clamp(1e-5, 1 - 1e-5)
    pt = (one_hot * probabilities).sum(dim=1) + 1e-5
    return (-((1 - pt) ** gamma) * pt.log()).mean()


def dice_loss(probability: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary dice loss per image, ``1 - (2 Σ p·g + 1) / (Σ p + Σ g + 1)``, averaged over the batch."""
    p, g = probability.flatten(1), target.flatten(1).float()
    return (1 - (2 * (p * g).sum(1) + 1) / (p.sum(1) + g.sum(1) + 1)).mean()


def two_channel_maps(
    patch_tokens: torch.Tensor, text: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """One layer of Eq. 4 with both channels: ``softmax(upsample(100 · t @ T))`` ``[B, 2, H, W]``.

    Args:
        patch_tokens: ``[B, N, D]`` unit patch features.
        text: ``[B, D, 2]`` per image (images of different classes have different text features).
        grid: Patch grid ``(rows, columns)``.
        size: Output ``(height, width)``.
    """
    logits = LOGIT_SCALE * torch.bmm(patch_tokens, text)  # [B, N, 2]
    logits = logits.transpose(1, 2).reshape(patch_tokens.shape[0], 2, *grid)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True).softmax(dim=1)


def segmentation_loss(
    adapters: Adapters,
    tokens: Sequence[torch.Tensor],
    text: torch.Tensor,
    masks: torch.Tensor,
    grid: tuple[int, int],
) -> torch.Tensor:
    """Σ over layers of focal + dice between the two-channel map and ``masks`` ``[B, H, W]`` (bool)."""
    size = tuple(masks.shape[-2:])
    loss = masks.new_zeros((), dtype=torch.float32)
    for projected in adapters(tokens):
        probabilities = two_channel_maps(projected, text, grid, size)
        loss = loss + focal_loss(probabilities, masks) + dice_loss(probabilities[:, 1], masks)
    return loss


@dataclass(frozen=True)
class TokenBatch:
    """What one training step needs.

    Attributes:
        tokens: Per layer ``[B, 1 + N, W]`` block outputs (frozen CLIP).
        text: ``[B, D, 2]`` ``[f_nor, f_abn]`` of each image's class.
        masks: ``[B, H, W]`` boolean ground truth.
        normality_text: ``[B, D, 2]`` ``[f_nor, f_add(g)]`` for the normality loss, or ``None``.
        normality_masks: ``[B, H, W]``: the mask where the image's type is ``g``, else empty.
    """

    tokens: list[torch.Tensor]
    text: torch.Tensor
    masks: torch.Tensor
    normality_text: torch.Tensor | None = None
    normality_masks: torch.Tensor | None = None


def fit_adapters(
    adapters: Adapters,
    epochs: Callable[[int], Iterable[TokenBatch]],
    grid: tuple[int, int],
    config: AdapterTraining = AdapterTraining(),
    log: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Optimise ``adapters`` in place with Adam on the APRIL-GAN loss (plus the normality loss if weighted).

    Args:
        adapters: Linear layers to train.
        epochs: ``epochs(e)`` yields the batches of epoch ``e``.
        grid: Patch grid of the tokens.
        config: Optimiser settings.
        log: Called with ``(epoch, mean loss)`` after each epoch.

    Returns:
        Mean loss per epoch.
    """
    optimizer = torch.optim.Adam(adapters.parameters(), lr=config.lr, betas=config.betas)
    adapters.train()
    history = []
    for epoch in range(config.epochs):
        total, count = 0.0, 0
        for batch in epochs(epoch):
            loss = segmentation_loss(adapters, batch.tokens, batch.text, batch.masks, grid)
            if config.normality_weight and batch.normality_text is not None:
                extra = segmentation_loss(
                    adapters, batch.tokens, batch.normality_text, batch.normality_masks, grid
                )
                loss = loss + config.normality_weight * extra
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item(), count + 1
        if count == 0:
            raise ValueError("epochs: yielded no batch")
        history.append(total / count)
        if log is not None:
            log(epoch, history[-1])
    adapters.eval()
    return history


@dataclass(frozen=True)
class MaskedImage:
    """A training image of the auxiliary dataset: path, class, type and mask file (``None`` for good)."""

    path: Path
    class_name: str
    anomaly_type: str
    mask_path: Path | None


def read_masked_dataset(root: str | Path) -> list[MaskedImage]:
    """The ``test/`` images of every class folder of a dataset in MVTec AD's layout (any class names).

    Raises:
        FileNotFoundError: No such folder, or no class with a ``test/`` folder.
        ValueError: A defect image without its mask (``ground_truth/<type>/<stem>_mask.png``), or no defect
            image at all (the loss needs masks).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"auxiliary dataset: no folder at {root}")
    samples = []
    for class_dir in sorted(d for d in root.iterdir() if (d / "test").is_dir()):
        for type_dir in sorted(d for d in (class_dir / "test").iterdir() if d.is_dir()):
            for path in sorted(type_dir.glob("*.png")):
                mask = None
                if type_dir.name != GOOD:
                    mask = class_dir / "ground_truth" / type_dir.name / f"{path.stem}_mask.png"
                    if not mask.is_file():
                        raise ValueError(
                            f"auxiliary dataset: defect image {path} has no mask (expected {mask})"
                        )
                samples.append(MaskedImage(path, class_dir.name, type_dir.name, mask))
    if not samples:
        raise FileNotFoundError(f"auxiliary dataset {root}: no <class>/test/<type>/*.png images")
    if all(s.mask_path is None for s in samples):
        raise ValueError(f"auxiliary dataset {root}: no defect image with a mask; the loss needs pixel masks")
    return samples


def _layer_tokens(
    backbone: ClipBackbone, samples: Sequence[MaskedImage], layers: Sequence[int]
) -> list[torch.Tensor]:
    """Per layer ``[B, 1 + N, W]`` block outputs of the samples' images (frozen CLIP, no gradients)."""
    images = []
    for sample in samples:
        with Image.open(sample.path) as handle:
            images.append(handle.convert("RGB"))
    with torch.no_grad():
        _, tokens = backbone.encode_image_layers(backbone.preprocess(images), layers)
    return tokens


def _mask(sample: MaskedImage, size: int) -> torch.Tensor:
    if sample.mask_path is None:
        return torch.zeros(size, size, dtype=torch.bool)
    with Image.open(sample.mask_path) as handle:
        mask = np.asarray(
            handle.convert("L").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32
        )
    return torch.from_numpy(mask / 255 > 0.5)


class _TextBank:
    """Text features per class and per (class, type), computed once."""

    def __init__(self, backbone: ClipBackbone, phrases: Callable[[str, str], Sequence[str]]) -> None:
        self.backbone, self.phrases, self._cache = backbone, phrases, {}

    def state(self, class_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if class_name not in self._cache:
            normal, abnormal = aprilgan_prompts(class_name)
            self._cache[class_name] = (
                self.backbone.text_feature(normal),
                self.backbone.text_feature(abnormal),
            )
        return self._cache[class_name]

    def added(self, class_name: str, anomaly_type: str) -> torch.Tensor:
        key = (class_name, anomaly_type)
        if key not in self._cache:
            prompts = normality_prompts(class_name, list(self.phrases(class_name, anomaly_type)))
            self._cache[key] = self.backbone.text_feature(prompts)
        return self._cache[key]


@torch.no_grad()
def init_from_projection(adapters: Adapters, backbone: ClipBackbone, tokens: Sequence[torch.Tensor]) -> None:
    """Set each linear layer to CLIP's own patch projection, ``proj^T · ln_post(t)``, folded into ``W t + b``.

    Our addition, not the authors' recipe (book: ``reproducing.md``, "Toy world"): the linear layers then
    start where CLIP's training put the last block's patch tokens, beside the texts, defect types included,
    and the official loss only adjusts them. LayerNorm's centring and affine part fold exactly; its
    per-token ``1 / σ`` cannot, and is replaced by the median σ of ``tokens`` (it only weighs ``b`` against
    ``W t``, since the layers' outputs are L2-normalised).

    Args:
        adapters: Layers to overwrite, one per entry of ``tokens``.
        backbone: The CLIP whose ``ln_post`` and ``proj`` are folded in.
        tokens: Per layer ``[B, 1 + N, W]`` block outputs of sample images (CLS first).

    Raises:
        ValueError: A vision tower without ``ln_post`` and a ``proj`` matrix.
    """
    visual = backbone.model.visual
    if getattr(visual, "proj", None) is None or not hasattr(visual, "ln_post"):
        raise ValueError(f"init: model {backbone.model_name!r} has no ln_post + proj patch projection")
    gamma, beta, proj = visual.ln_post.weight, visual.ln_post.bias, visual.proj
    width = gamma.numel()
    centring = torch.eye(width, device=gamma.device) - 1 / width
    weight = proj.T @ (gamma[:, None] * centring)
    for fc, layer_tokens in zip(adapters.fc, tokens, strict=True):
        sigma = layer_tokens[:, 1:].float().std(dim=-1, unbiased=False).median()
        fc.weight.copy_(weight)
        fc.bias.copy_(sigma * (proj.T @ beta))


def default_phrases(class_name: str, anomaly_type: str) -> list[str]:
    """``"<class> with <type>"`` ("candle with wax", from VisA's ``wax``), the fallback normality phrase."""
    return [f"{class_name} with {anomaly_type.replace('_', ' ')}"]


def image_batches(
    backbone: ClipBackbone,
    samples: Sequence[MaskedImage],
    layers: Sequence[int],
    config: AdapterTraining,
    phrases: Callable[[str, str], Sequence[str]] = default_phrases,
) -> Callable[[int], Iterator[TokenBatch]]:
    """Epochs of :class:`TokenBatch` from images, shuffled by ``(seed, epoch)``; CLIP runs without grad."""
    bank = _TextBank(backbone, phrases)
    types = {}
    for s in samples:
        if s.anomaly_type != GOOD:
            types.setdefault(s.class_name, set()).add(s.anomaly_type)
    size = backbone.image_size

    def epoch(number: int) -> Iterator[TokenBatch]:
        rng = np.random.default_rng([config.seed, number])
        order = rng.permutation(len(samples))
        for start in range(0, len(order), config.batch_size):
            chosen = [samples[i] for i in order[start : start + config.batch_size]]
            tokens = _layer_tokens(backbone, chosen, layers)
            masks = torch.stack([_mask(s, size) for s in chosen]).to(backbone.device)
            text = torch.stack([torch.stack(bank.state(s.class_name), dim=1) for s in chosen])
            extra_text = extra_masks = None
            if config.normality_weight:
                picks = []
                for s in chosen:
                    own = s.anomaly_type != GOOD and rng.random() < 0.5
                    picks.append(s.anomaly_type if own else str(rng.choice(sorted(types[s.class_name]))))
                extra_text = torch.stack(
                    [
                        torch.stack([bank.state(s.class_name)[0], bank.added(s.class_name, g)], dim=1)
                        for s, g in zip(chosen, picks, strict=True)
                    ]
                )
                keep = torch.tensor([s.anomaly_type == g for s, g in zip(chosen, picks, strict=True)])
                extra_masks = masks & keep.to(masks.device)[:, None, None]
            yield TokenBatch(tokens, text, masks, extra_text, extra_masks)

    return epoch


def train_adapters(
    backbone: ClipBackbone,
    dataset: str | Path | Sequence[MaskedImage],
    *,
    layers: Sequence[int] | None = None,
    config: AdapterTraining = AdapterTraining(),
    phrases: Callable[[str, str], Sequence[str]] = default_phrases,
    log: Callable[[int, float], None] | None = None,
) -> tuple[Adapters, list[float]]:
    """Train APRIL-GAN's linear layers on an auxiliary dataset (e.g. VisA in MVTec AD's layout).

    Args:
        backbone: Frozen CLIP (``load_clip``), e.g. ViT-L-14-336 at 518 px for the paper's setting.
        dataset: Dataset root, or its images (:func:`read_masked_dataset`).
        layers: Blocks to read; default ``backbone.default_layers()`` (6, 12, 18, 24 for ViT-L).
        config: Recipe (:class:`AdapterTraining`).
        phrases: ``(class, type) -> phrases`` of the normality loss (only with ``normality_weight > 0``).
        log: Called with ``(epoch, mean loss)``.

    Returns:
        ``(adapters, mean loss per epoch)``; save with :meth:`Adapters.save` (authors' format).
    """
    samples = read_masked_dataset(dataset) if isinstance(dataset, str | Path) else list(dataset)
    chosen = tuple(layers) if layers is not None else backbone.default_layers()
    adapters = Adapters(chosen, backbone.vision_width, backbone.embed_dim, seed=config.seed).to(
        backbone.device
    )
    if config.init == "projection":
        sample = samples[:: max(1, len(samples) // PROJECTION_SAMPLE)]
        init_from_projection(adapters, backbone, _layer_tokens(backbone, sample, chosen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        history = fit_adapters(
            adapters,
            image_batches(backbone, samples, chosen, config, phrases),
            backbone.grid_size,
            config,
            log,
        )
    adapters.weights = f"trained seed {config.seed}, {config.epochs} epochs, {config.init} init"
    return adapters, history
