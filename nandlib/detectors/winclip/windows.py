"""Image, window and patch embeddings of WinCLIP from an open_clip vision transformer.

One forward of the visual tower gives the image embedding and the final patch tokens; a hook
on ``patch_dropout`` captures its input (tokens after ``conv1``, the prepended class token and
the full-image positional embedding). Each window re-enters the tower there with the class
token plus its own patch tokens, which keep their full-image positions (anomalib
``WinClipModel.encode_image`` / ``_get_window_embeddings``). Book: ``protocol.md``, "WinCLIP".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ImageEmbeddings:
    """WinCLIP's three views of a batch of ``B`` images.

    Attributes:
        image: Projected class-token embedding ``[B, D]`` (unnormalised).
        windows: One ``[B, n_windows, D]`` tensor per window scale: projected class-token
            embedding of each window (unnormalised).
        patches: Final patch tokens after ``ln_post``, not projected, ``[B, H * W, width]``.
    """

    image: torch.Tensor
    windows: list[torch.Tensor]
    patches: torch.Tensor


def patch_grid(visual: nn.Module) -> tuple[int, int]:
    """``(H, W)`` patch grid of an open_clip vision transformer.

    Raises:
        ValueError: If the tower is not a ViT that pools its class token after ``ln_post``
            (the only layout WinCLIP's window embeddings are defined for).
    """
    required = ("conv1", "class_embedding", "positional_embedding", "patch_dropout", "ln_pre", "ln_post")
    missing = [name for name in required if not hasattr(visual, name)]
    if missing or not hasattr(visual, "transformer") or not hasattr(visual, "grid_size"):
        raise ValueError(f"backbone: WinCLIP needs an open_clip VisionTransformer; missing {missing}")
    pooling = getattr(visual, "pool_type", "tok")
    if getattr(visual, "attn_pool", None) is not None or pooling != "tok":
        raise ValueError(f"backbone: WinCLIP needs class-token pooling, got pool_type={pooling!r}")
    if getattr(visual, "final_ln_after_pool", False):
        raise ValueError("backbone: WinCLIP needs ln_post on all tokens (final_ln_after_pool=False)")
    height, width = visual.grid_size
    return int(height), int(width)


def run_transformer(transformer: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Run the residual stack on ``[N, L, C]`` tokens in the layout of the installed open_clip.

    open_clip ≥ 2.26.1 (``Transformer.batch_first`` exists) takes ``[N, L, C]`` and transposes
    itself if needed; older versions (≤ 2.24, used by anomalib) expect ``[L, N, C]``. Feeding the
    wrong layout lets attention mix windows instead of tokens (anomalib issue #2571).
    """
    if hasattr(transformer, "batch_first"):
        return transformer(tokens)
    return transformer(tokens.permute(1, 0, 2)).permute(1, 0, 2)


@contextmanager
def _captured_tokens(visual: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Capture the input of ``patch_dropout`` and return tokens from the visual forward."""
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured["tokens"] = args[0]

    handle = visual.patch_dropout.register_forward_pre_hook(hook)
    had_tokens = visual.output_tokens
    visual.output_tokens = True
    try:
        yield captured
    finally:
        visual.output_tokens = had_tokens
        handle.remove()


def encode_windows(
    visual: nn.Module, tokens: torch.Tensor, masks: torch.Tensor, window_batch_size: int
) -> torch.Tensor:
    """Projected class-token embedding of every window of every image.

    Args:
        visual: open_clip vision transformer.
        tokens: Captured tokens ``[B, 1 + H * W, width]`` (class token first, positions added).
        masks: ``[cells_per_window, n_windows]`` raster cell indices.
        window_batch_size: Window sequences per transformer call.

    Returns:
        ``[B, n_windows, D]``.
    """
    batch, n_windows = tokens.shape[0], masks.shape[1]
    class_index = masks.new_zeros(1, n_windows)
    selection = torch.cat([class_index, masks + 1]).T  # [n_windows, 1 + cells]: class token, then cells
    sequences = tokens[:, selection].flatten(0, 1)  # [B * n_windows, 1 + cells, width], image-major
    pooled = []
    for chunk in sequences.split(window_batch_size):
        x = visual.ln_pre(visual.patch_dropout(chunk))
        x = run_transformer(visual.transformer, x)
        pooled.append(visual.ln_post(x[:, 0]))  # ln_post is per token: same as ln_post on all, then token 0
    embedding = torch.cat(pooled)
    if visual.proj is not None:
        embedding = embedding @ visual.proj
    return embedding.reshape(batch, n_windows, -1)


@torch.no_grad()
def encode_images(
    visual: nn.Module, pixels: torch.Tensor, masks: list[torch.Tensor], window_batch_size: int
) -> ImageEmbeddings:
    """Image, window and patch embeddings of preprocessed images from one visual forward.

    Args:
        visual: open_clip vision transformer (checked by :func:`patch_grid`).
        pixels: ``[B, 3, S, S]`` CLIP-normalised images on the tower's device.
        masks: One ``[cells_per_window, n_windows]`` index tensor per window scale.
        window_batch_size: Window sequences per transformer call.
    """
    with _captured_tokens(visual) as captured:
        image, patches = visual(pixels)
    windows = [encode_windows(visual, captured["tokens"], mask, window_batch_size) for mask in masks]
    return ImageEmbeddings(image=image, windows=windows, patches=patches)
