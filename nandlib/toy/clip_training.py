"""Contrastive training of the toy CLIP, with every true caption counted as a positive.

Book: ``reproducing.md``, "Toy world". A batch of the toy world holds many captions that say the same thing
("a photo of a flawless carpet." five times): plain one-to-one InfoNCE would push an image away from the
captions of its own kind. :func:`multi_positive_loss` instead spreads the target over every caption that is
true of the image (:func:`nandlib.toy.world.describes`), in both directions.

The image embedding is CLIP's usual class-token embedding (so WinCLIP's window embeddings and APRIL-GAN's
image score stay defined), and a second contrastive term on the *average of the patch tokens* (through the
same ``ln_post`` and ``proj``) puts the patch tokens into the joint space as well; without it patch tokens
were poorly aligned with text on the prototype. Training is deterministic by seed on CPU for a fixed number
of threads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nandlib.backbones import ClipBackbone, load_clip
from nandlib.toy.world import ImageSet, describes, sample_caption

TOY_MODEL = "nand-toy"


@dataclass(frozen=True)
class ClipTraining:
    """Budget and hyper-parameters of the toy CLIP's training.

    Attributes:
        steps: Optimiser steps.
        batch_size: Images (and captions) per step.
        lr: Peak AdamW learning rate (linear warm-up over ``warmup`` steps, then cosine to zero).
        weight_decay: AdamW weight decay (on matrices only).
        warmup: Warm-up steps.
        patch_weight: Weight of the contrastive term on averaged patch tokens.
        seed: Seed of initialisation, batches and captions.
    """

    steps: int = 400
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 20
    patch_weight: float = 1.0
    seed: int = 0


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
    target = positives.float()
    per_image = -(target / target.sum(1, keepdim=True) * logits.log_softmax(dim=1)).sum(1).mean()
    per_text = -(target / target.sum(0, keepdim=True) * logits.log_softmax(dim=0)).sum(0).mean()
    return (per_image + per_text) / 2


def _pixels(backbone: ClipBackbone, images: np.ndarray) -> torch.Tensor:
    """uint8 ``[B, S, S, 3]`` at the model's size → CLIP-normalised ``[B, 3, S, S]``."""
    visual = backbone.model.visual
    mean = torch.tensor(getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))
    std = torch.tensor(getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))
    x = torch.from_numpy(images).float().div(255).permute(0, 3, 1, 2)
    return ((x - mean[:, None, None]) / std[:, None, None]).to(backbone.device)


def _embeddings(backbone: ClipBackbone, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-token embedding and averaged-patch embedding, both unit vectors ``[B, D]``."""
    visual = backbone.model.visual
    visual.output_tokens = True
    try:
        pooled, tokens = visual(pixels)
    finally:
        visual.output_tokens = False
    return F.normalize(pooled, dim=-1), F.normalize(tokens.mean(dim=1) @ visual.proj, dim=-1)


def train_clip(
    data: ImageSet,
    config: ClipTraining = ClipTraining(),
    *,
    model_name: str = TOY_MODEL,
    device: str = "cpu",
    log: Callable[[int, float], None] | None = None,
) -> tuple[ClipBackbone, list[float]]:
    """Train a CLIP from random initialisation on captioned toy images.

    Args:
        data: Images and their ``(class, type)`` (:func:`nandlib.toy.world.clip_images`); captions are drawn
            anew for each step (:func:`nandlib.toy.world.sample_caption`).
        config: Budget and hyper-parameters.
        model_name: Registered model config (its tokenizer must know every caption's words).
        device: Torch device.
        log: Called with ``(step, loss)`` after each step.

    Returns:
        ``(backbone in eval mode, loss per step)``.
    """
    if config.steps < 1 or config.batch_size < 2:
        raise ValueError(f"steps ({config.steps}) must be >= 1 and batch_size ({config.batch_size}) >= 2")
    backbone = load_clip(model_name, seed=config.seed, device=device)
    if data.images.shape[1] != backbone.image_size:
        raise ValueError(
            f"data: images are {data.images.shape[1]} px, {model_name} takes {backbone.image_size}"
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
            index = rng.choice(len(data.keys), size=min(config.batch_size, len(data.keys)), replace=False)
            keys = [data.keys[i] for i in index]
            captions, caption_keys = zip(*(sample_caption(c, t, rng) for c, t in keys), strict=True)
            positives = torch.from_numpy(describes(keys, caption_keys)).to(backbone.device)
            image_cls, image_avg = _embeddings(backbone, _pixels(backbone, data.images[index]))
            text = F.normalize(
                model.encode_text(backbone.tokenizer(list(captions)).to(backbone.device)), dim=-1
            )
            scale = model.logit_scale.exp().clamp(max=100)
            loss = multi_positive_loss(scale * image_cls @ text.T, positives)
            loss = loss + config.patch_weight * multi_positive_loss(scale * image_avg @ text.T, positives)
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
