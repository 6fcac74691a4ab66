"""APRIL-GAN's trainable linear layers ("adapters"): one ``Linear(W_vision -> D_embed)`` per chosen layer.

They map a ViT block's patch tokens into CLIP's joint space, where they are compared with the text
features (Eq. 4). The checkpoint format is the authors' (ByChelsea/VAND-APRIL-GAN ``train.py``):
``{"trainable_linearlayer": {"fc.0.weight", "fc.0.bias", ...}}``, so their released
``visa_pretrained.pth`` loads as is; so does the ``"linear"`` part of a combined
``{"clip": ..., "linear": ...}`` checkpoint (:mod:`nandlib.checkpoints`). Book: ``method.md``, "APRIL-GAN".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nandlib.checkpoints import (
    COMBINED_LINEAR_KEY,
    CheckpointError,
    as_state_dict,
    describe,
    load_state_dict,
    provenance,
    read_checkpoint,
)

CHECKPOINT_KEY = "trainable_linearlayer"


class Adapters(nn.Module):
    """The linear layers of APRIL-GAN, with the blocks they read.

    Args:
        layers: ViT block numbers (from 1) whose tokens the layers project, e.g. ``(6, 12, 18, 24)``.
        in_dim: Width of the vision transformer (1024 for ViT-L).
        out_dim: Joint embedding dimension (768 for ViT-L-14-336).
        seed: Seed of the default ``nn.Linear`` initialisation (used until weights are loaded).

    Attributes:
        fc: ``nn.ModuleList`` of ``Linear(in_dim, out_dim)`` with bias, one per layer (keys ``fc.i.*``).
        weights: Provenance (``"random-init seed 0"`` or ``"checkpoint:<path> sha256:<16 hex>"``).
    """

    def __init__(self, layers: Sequence[int], in_dim: int, out_dim: int, seed: int = 0) -> None:
        super().__init__()
        if not layers:
            raise ValueError("layers: need at least one layer")
        self.layers = tuple(int(layer) for layer in layers)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.fc = nn.ModuleList([nn.Linear(in_dim, out_dim) for _ in self.layers])
        self.weights = f"random-init seed {seed}"
        self.eval()

    def forward(self, tokens: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Project each layer's patch tokens and L2-normalise them.

        Args:
            tokens: Per layer ``[B, 1 + N, W]`` block outputs, CLS first (it is dropped).

        Returns:
            Per layer ``[B, N, D]`` unit vectors.
        """
        return [F.normalize(fc(t[:, 1:, :]), dim=-1) for fc, t in zip(self.fc, tokens, strict=True)]

    def load(self, path: str | Path) -> Adapters:
        """Load weights from a checkpoint in the authors' format, or the ``"linear"`` part of a combined one
        (strict: keys and shapes must match).

        Raises:
            FileNotFoundError: No file at ``path``.
            CheckpointError: Naming ``path`` (a ``ValueError``): empty or unreadable, neither format, or
                keys/shapes that do not fit these layers.
        """
        checkpoint = read_checkpoint(path)
        keys = (CHECKPOINT_KEY, COMBINED_LINEAR_KEY)
        found = isinstance(checkpoint, Mapping) and [key for key in keys if key in checkpoint]
        if not found:
            raise CheckpointError(
                f"checkpoint {path}: expected a dict with key {CHECKPOINT_KEY!r} (the authors' format) or "
                f"{COMBINED_LINEAR_KEY!r} (a combined checkpoint), found {describe(checkpoint)}"
            )
        state = as_state_dict(checkpoint[found[0]], path)
        load_state_dict(self, state, path, "checkpoint", f"{len(self.fc)} adapters")
        self.weights = provenance(path)
        return self

    def save(self, path: str | Path) -> None:
        """Save the weights in the authors' format (loadable by their ``test.py``)."""
        state = {key: value.detach().cpu() for key, value in self.state_dict().items()}
        torch.save({CHECKPOINT_KEY: state}, Path(path))

