"""APRIL-GAN's trainable linear layers ("adapters"): one ``Linear(W_vision -> D_embed)`` per chosen layer.

They map a ViT block's patch tokens into CLIP's joint space, where they are compared with the text
features (Eq. 4). The checkpoint format is the authors' (ByChelsea/VAND-APRIL-GAN ``train.py``):
``{"trainable_linearlayer": {"fc.0.weight", "fc.0.bias", ...}}``, so their released
``visa_pretrained.pth`` loads as is. Book: ``method.md``, "APRIL-GAN".
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

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
        """Load weights from a checkpoint in the authors' format (strict: keys and shapes must match).

        Raises:
            FileNotFoundError: No file at ``path``.
            ValueError: Not that format, or keys/shapes that do not fit these layers.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint: no file at {path}")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
            raise ValueError(f"checkpoint {path}: expected a dict with key {CHECKPOINT_KEY!r}")
        try:
            self.load_state_dict(checkpoint[CHECKPOINT_KEY], strict=True)
        except RuntimeError as err:
            raise ValueError(f"checkpoint {path} does not fit {len(self.fc)} adapters: {err}") from err
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        self.weights = f"checkpoint:{path} sha256:{digest}"
        return self

    def save(self, path: str | Path) -> None:
        """Save the weights in the authors' format (loadable by their ``test.py``)."""
        state = {key: value.detach().cpu() for key, value in self.state_dict().items()}
        torch.save({CHECKPOINT_KEY: state}, Path(path))
