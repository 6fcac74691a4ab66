"""Contrastive training of the toy CLIP, with every true caption counted as a positive.

Book: ``reproducing.md``, "Toy world". A batch of the toy world holds many captions that say the same thing
("a photo of a flawless carpet." five times): plain one-to-one InfoNCE would push an image away from the
captions of its own kind. :func:`multi_positive_loss` instead spreads the target over every caption that is
true of the image (:func:`nandlib.toy.world.describes`), in both directions.

The image embedding is CLIP's usual class-token embedding (so WinCLIP's window embeddings and APRIL-GAN's
image score stay defined). The patch tokens (through the same ``ln_post`` and ``proj``) are put into the
joint space by a dense term (:func:`dense_loss`): each patch must pick, among its class's state captions,
the one that describes the patch itself ("flawless carpet" for a clean patch of a carpet with a hole), and
each state caption must rank the batch's patches in that state above all others ("carpet with a loose
thread" above a hole's patches, which may say "defect" more loudly) — the order NAND's ``A_sup`` needs.
Batches hold few classes with each good image beside its defective twin (:func:`batch_indices`), so that
the defects, not the classes, decide the loss, and the logit scale is capped low so that captions differing
by one word end up apart in angle. A caption-only term (:func:`text_contrast_loss`) keeps the state captions
of a class apart, so that each defect type gets its own text direction (NAND's ``f_add``). Two image-level
terms of earlier versions (averaged patch tokens, the defect's own patches against the image's captions)
remain as options for ablations. Training is deterministic by seed on CPU for a fixed number of threads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nandlib.backbones import ClipBackbone, encode_text_truncated, load_clip
from nandlib.data.classes import GOOD
from nandlib.toy.world import ImageSet, describes, own_states, sample_caption, state_captions

TOY_MODEL = "nand-toy-p4"


@dataclass(frozen=True)
class ClipTraining:
    """Budget and hyper-parameters of the toy CLIP's training.

    Attributes:
        model: Registered model config of the toy CLIP (``nandlib/model_configs``; its tokenizer must know
            every caption's words). ``nand-toy-p4``: 4-px patches at 64 px (16 × 16 tokens);
            ``nand-toy`` (8-px patches) was the default until issue #22.
        steps: Optimiser steps.
        batch_size: Images (and captions) per step.
        lr: Peak AdamW learning rate (linear warm-up over ``warmup`` steps, then cosine to zero).
        weight_decay: AdamW weight decay (on matrices only).
        warmup: Warm-up steps.
        dense_weight: Weight of the per-patch term (:func:`dense_loss`).
        dense_cover: Fraction of a patch a defect must cover for the patch to count as defective.
        dense_columns: Weight of the per-patch term's caption-to-patches direction (:func:`dense_loss`).
        text_weight: Weight of the caption-only term (:func:`text_contrast_loss`): two draws of each state
            caption of the batch's classes must find each other among all the others.
        max_logit_scale: Cap of CLIP's learnt logit scale (OpenAI: 100). A low cap forces captions that
            differ by one word ("hole", "thread") apart in angle, not only by a sliver scaled up.
        classes_per_batch: Classes in each batch (:func:`batch_indices`); ``None``: images drawn uniformly.
        seed: Seed of initialisation, batches and captions.
    """

    model: str = TOY_MODEL
    steps: int = 400
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 20
    dense_weight: float = 2.0
    dense_cover: float = 0.1
    dense_columns: float = 1.0
    text_weight: float = 1.0
    max_logit_scale: float = 10.0
    classes_per_batch: int | None = 8
    seed: int = 0


def batch_indices(
    keys: Sequence[tuple[str, str]], batch_size: int, classes_per_batch: int | None, rng: np.random.Generator
) -> np.ndarray:
    """Indices of one batch: ``classes_per_batch`` classes, the same number of images each, pairs kept.

    With uniformly drawn images, telling the classes apart already explains most captions of a batch, and
    the loss plateaus before CLIP looks at the small defects. Few classes per batch, with each good image
    next to its defective twin (:func:`nandlib.toy.world.clip_images`), leave the defects as the only
    way to match the captions (hard negatives).

    Args:
        keys: ``(class, type)`` of each image; images ``2k`` and ``2k + 1`` of a class form a pair.
        batch_size: Images per batch (the whole set if it has fewer).
        classes_per_batch: Classes per batch, or ``None`` to draw images uniformly without replacement.
        rng: Random generator.
    """
    if classes_per_batch is None:
        return rng.choice(len(keys), size=min(batch_size, len(keys)), replace=False)
    by_class: dict[str, list[int]] = {}
    for index, (class_name, _) in enumerate(keys):
        by_class.setdefault(class_name, []).append(index)
    names = sorted(by_class)
    chosen = rng.choice(len(names), size=min(classes_per_batch, len(names)), replace=False)
    pairs_each = max(1, batch_size // (2 * len(chosen)))
    out = []
    for c in chosen:
        members = by_class[names[c]]
        starts = members[: len(members) - len(members) % 2 : 2] or members[:1]
        for start in rng.choice(starts, size=min(pairs_each, len(starts)), replace=False):
            out += [int(start), int(start) + 1] if start + 1 in members else [int(start)]
    return np.asarray(out)


def multi_positive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy against a uniform target over every positive pair.

    With one positive per row (the diagonal) this is CLIP's InfoNCE.

    Args:
        logits: ``[N_images, N_captions]`` scaled similarities.
        positives: Boolean ``[N_images, N_captions]``; every row and column needs a positive.

    Raises:
        ValueError: A row or column without a positive, or mismatched shapes.
    """
    if logits.shape != positives.shape:
        raise ValueError(f"positives {tuple(positives.shape)} must match logits {tuple(logits.shape)}")
    if not (positives.any(dim=1).all() and positives.any(dim=0).all()):
        raise ValueError("positives: every image and every caption needs at least one positive")
    return (row_loss(logits, positives) + row_loss(logits.T, positives.T)) / 2


def row_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row's softmax against a uniform target over the row's positives (one way)."""
    target = positives.float()
    return -(target / target.sum(1, keepdim=True) * logits.log_softmax(dim=1)).sum(1).mean()


def _pixels(backbone: ClipBackbone, images: np.ndarray) -> torch.Tensor:
    """uint8 ``[B, S, S, 3]`` at the model's size → CLIP-normalised ``[B, 3, S, S]``."""
    visual = backbone.model.visual
    mean = torch.tensor(getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))
    std = torch.tensor(getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))
    x = torch.from_numpy(images).float().div(255).permute(0, 3, 1, 2)
    return ((x - mean[:, None, None]) / std[:, None, None]).to(backbone.device)


@dataclass
class _Views:
    """The image embeddings one step compares with the captions (unit vectors); each computed on first use.

    Attributes:
        image: ``[B, D]`` class-token embeddings.
        tokens: ``[B, N, W]`` patch tokens after ``ln_post``, before ``proj``.
        proj: ``[W, D]`` the class token's projection, shared by the patch views.
        cover: ``[B, N]`` fraction of each patch the defect covers.
    """

    image: torch.Tensor
    tokens: torch.Tensor
    proj: torch.Tensor
    cover: torch.Tensor

    @cached_property
    def patches(self) -> torch.Tensor:
        """``[B, N, D]`` every patch token."""
        return F.normalize(self.tokens @ self.proj, dim=-1)


def _embeddings(backbone: ClipBackbone, pixels: torch.Tensor, masks: torch.Tensor) -> _Views:
    """Class-token embeddings of one batch, and the patch tokens its other views are made from.

    Patch tokens go through the same ``ln_post`` and ``proj`` as the class token; ``masks`` ``[B, S, S]``
    give each patch's defect cover.
    """
    visual = backbone.model.visual
    visual.output_tokens = True
    try:
        pooled, tokens = visual(pixels)
    finally:
        visual.output_tokens = False
    patch = visual.patch_size[0]
    cover = F.avg_pool2d(masks.float()[:, None], patch).flatten(1)  # [B, N], row-major like the tokens
    return _Views(image=F.normalize(pooled, dim=-1), tokens=tokens, proj=visual.proj, cover=cover)


def _encode_text(backbone: ClipBackbone, texts: Sequence[str]) -> torch.Tensor:
    """Unit text embeddings ``[N, D]`` of ``texts``, with gradients (training).

    Computed only up to the batch's longest caption (:func:`nandlib.backbones.encode_text_truncated`):
    the toy captions fill about a third of the context.
    """
    tokens = backbone.tokenizer(list(texts)).to(backbone.device)
    return F.normalize(encode_text_truncated(backbone.model, tokens), dim=-1)


def dense_loss(
    patches: torch.Tensor,
    cover: torch.Tensor,
    text: torch.Tensor,
    positives: torch.Tensor,
    min_cover: float,
    column_weight: float = 0.0,
) -> torch.Tensor:
    """Each patch against its classes' state captions: what the patch itself shows is the positive.

    Image-level terms pull a defective image's clean patches towards "carpet with a hole" too, which leaves
    the suppression map nowhere in particular to fire; here a clean patch must pick "flawless carpet" and a
    defective one its own type ("carpet with a hole"; the generic "damaged carpet" only for a type that is
    never captioned, :func:`nandlib.toy.world.own_states`) over the class's other states, so that the patch
    tokens NAND reads (Eq. 4) say what they show. Patches a defect covers partly (``0 < cover < min_cover``)
    are left out; defective and clean patches weigh half each.

    Args:
        patches: ``[B, N, D]`` unit patch embeddings.
        cover: ``[B, N]`` fraction of each patch covered by the image's defect.
        text: ``[C, D]`` unit state-caption embeddings (:func:`nandlib.toy.world.state_captions`), already
            multiplied by the logit scale.
        positives: ``[2, B, C]``: caption ``j`` is the state of a clean patch of image ``i`` (``[0]``), of a
            defective one (``[1]``).
        min_cover: Fraction of a patch a defect must cover to make it defective.
        column_weight: Weight of the other direction: each state caption against every kept patch of the
            batch, the patches in that state its positives (ranks a type's patches above the others').
    """
    logits = patches @ text.T  # [B, N, C]
    chosen = []  # (logits, targets) of the clean, then the defective patches that have a positive
    for rows, wanted in ((cover == 0, positives[0]), (cover >= min_cover, positives[1])):
        targets = wanted[:, None, :].expand_as(logits)[rows]
        kept = targets.any(dim=1)
        if kept.any():
            chosen.append((logits[rows][kept], targets[kept]))
    if not chosen:
        return logits.sum() * 0
    loss = torch.stack([row_loss(part, targets) for part, targets in chosen]).mean()
    if column_weight:
        columns = torch.cat([part for part, _ in chosen]).T
        wanted = torch.cat([targets for _, targets in chosen]).T
        some = wanted.any(dim=1)
        loss = loss + column_weight * row_loss(columns[some], wanted[some])
    return loss


def text_contrast_loss(text: torch.Tensor, keys: Sequence[tuple[str, str]]) -> torch.Tensor:
    """Captions against captions: those saying the same state are the positives, the caption itself left out.

    The image terms alone let the text tower settle on one point for every defect type of a class
    ("carpet with a hole" and "carpet with a loose thread" at cosine 1.00): while the class token cannot
    tell the types apart, that costs a constant. NAND's Eq. 4 then compares every patch with the same
    ``f_add - f_nor`` direction whatever the group. This term asks the text tower to keep the states apart.

    Args:
        text: ``[M, D]`` unit caption embeddings, already multiplied by the logit scale.
        keys: What each caption says (:func:`nandlib.toy.world.caption_key`); each key at least twice.

    Raises:
        ValueError: A key that occurs only once (it would have no positive).
    """
    same = torch.tensor([[a == b for b in keys] for a in keys], device=text.device)
    eye = torch.eye(len(keys), dtype=torch.bool, device=text.device)
    positives = same & ~eye
    if not positives.any(dim=1).all():
        raise ValueError("keys: every caption needs another caption with the same key")
    logits = (text @ text.T).masked_fill(eye, -1e4)  # self-similarity is not a candidate
    return row_loss(logits, positives)


def train_clip(
    data: ImageSet,
    config: ClipTraining = ClipTraining(),
    *,
    device: str = "cpu",
    log: Callable[[int, float], None] | None = None,
) -> tuple[ClipBackbone, list[float]]:
    """Train a CLIP from random initialisation on captioned toy images.

    Args:
        data: Images and their ``(class, type)`` (:func:`nandlib.toy.world.clip_images`); captions are drawn
            anew for each step (:func:`nandlib.toy.world.sample_caption`).
        config: Budget and hyper-parameters.
        device: Torch device.
        log: Called with ``(step, loss)`` after each step.

    Returns:
        ``(backbone in eval mode, loss per step)``.
    """
    if config.steps < 1 or config.batch_size < 2:
        raise ValueError(f"steps ({config.steps}) must be >= 1 and batch_size ({config.batch_size}) >= 2")
    backbone = load_clip(config.model, seed=config.seed, device=device)
    if data.images.shape[1] != backbone.image_size:
        raise ValueError(
            f"data: images are {data.images.shape[1]} px, {config.model} takes {backbone.image_size}"
        )
    model = backbone.model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / max(1, config.warmup))
            * 0.5
            * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))
        ),
    )
    rng = np.random.default_rng(config.seed)
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for step in range(config.steps):
            index = batch_indices(data.keys, config.batch_size, config.classes_per_batch, rng)
            keys = [data.keys[i] for i in index]
            classes = sorted({c for c, _ in keys})
            captions, caption_keys = zip(*(sample_caption(c, t, rng) for c, t in keys), strict=True)
            positives = torch.from_numpy(describes(keys, caption_keys)).to(backbone.device)
            masks = torch.from_numpy(data.masks[index]).to(backbone.device)
            views = _embeddings(backbone, _pixels(backbone, data.images[index]), masks)
            text = _encode_text(backbone, captions)
            scale = model.logit_scale.exp().clamp(max=config.max_logit_scale)
            loss = multi_positive_loss(scale * views.image @ text.T, positives)
            if config.dense_weight:
                states = [c for name in classes for c in state_captions(name, rng)]
                state_text, state_keys = zip(*states, strict=True)
                state_features = _encode_text(backbone, state_text)
                clean = describes([(c, GOOD) for c, _ in keys], state_keys)
                own = own_states(keys, state_keys)
                loss = loss + config.dense_weight * dense_loss(
                    views.patches,
                    views.cover,
                    scale * state_features,
                    torch.from_numpy(np.stack([clean, own])).to(backbone.device),
                    config.dense_cover,
                    config.dense_columns,
                )
            if config.text_weight:
                # two fresh draws of every state caption of the batch's classes
                drawn = [
                    caption for name in classes for _ in range(2) for caption in state_captions(name, rng)
                ]
                texts, text_keys = zip(*drawn, strict=True)
                features = _encode_text(backbone, texts)
                loss = loss + config.text_weight * text_contrast_loss(scale * features, text_keys)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if log is not None:
                log(step, losses[-1])
    model.eval()
    return backbone, losses


def save_clip(backbone: ClipBackbone, path: str | Path) -> Path:
    """Save the weights as an open_clip state dict, loadable by ``load_clip(name, checkpoint=path)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.model.state_dict().items()}
    torch.save(state, path)
    return path


def timed(function: Callable, *args, **kwargs) -> tuple[object, float]:
    """``(function(*args, **kwargs), seconds)``."""
    started = time.perf_counter()
    return function(*args, **kwargs), time.perf_counter() - started
