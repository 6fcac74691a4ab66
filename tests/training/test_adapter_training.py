"""APRIL-GAN's adapter training: losses, learning a separable mask, bad auxiliary data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nandlib.adapters import Adapters
from nandlib.backbones import load_clip
from nandlib.protocol import pixel_auroc
from nandlib.training.adapters import (
    AdapterTraining,
    TokenBatch,
    dice_loss,
    fit_adapters,
    focal_loss,
    init_from_projection,
    read_masked_dataset,
    two_channel_maps,
)


def test_focal_and_dice_known_values() -> None:
    target = torch.tensor([[[True, False]]])
    perfect = torch.stack([(~target).float(), target.float()], dim=1)
    assert focal_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-8)
    half = torch.full((1, 2, 1, 2), 0.5)
    pt = 0.5 + 1e-5  # one-hot clamped to [1e-5, 1 - 1e-5] sums to 1 against 0.5/0.5
    assert focal_loss(half, target).item() == pytest.approx(-((1 - pt) ** 2) * np.log(pt), rel=1e-4)
    # dice: p = (0.5, 0.5), g = (1, 0): 1 - (2 * 0.5 + 1) / (1 + 1 + 1)
    assert dice_loss(half[:, 1], target).item() == pytest.approx(1 - 2 / 3)


def _separable_batches(seed: int, n_images: int = 16, grid: int = 4, width: int = 8, dim: int = 4):
    generator = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(dim, 2, generator=generator), dim=0)
    batches = []
    for _ in range(n_images // 4):
        masks_grid = torch.rand(4, grid, grid, generator=generator) < 0.3
        tokens = torch.randn(4, 1 + grid * grid, width, generator=generator) * 0.3
        tokens[:, 1:, 0] += masks_grid.flatten(1).float() * 2 - 1  # feature 0 says "defect" (linearly)
        masks = masks_grid.repeat_interleave(4, 1).repeat_interleave(4, 2)  # 16 x 16 pixels
        batches.append(TokenBatch([tokens], text.expand(4, dim, 2), masks))
    return batches


def test_fit_learns_a_linearly_separable_mask() -> None:
    batches = _separable_batches(0)
    adapters = Adapters((1,), in_dim=8, out_dim=4, seed=0)

    def maps() -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            probs = [
                two_channel_maps(adapters([b.tokens[0]])[0], b.text, (4, 4), (16, 16))[:, 1] for b in batches
            ]
        return torch.cat([b.masks for b in batches]).numpy(), torch.cat(probs).numpy()

    before = pixel_auroc(*maps())
    history = fit_adapters(adapters, lambda epoch: batches, (4, 4), AdapterTraining(epochs=40, lr=1e-2))
    after = pixel_auroc(*maps())
    assert history[-1] < history[0]
    assert after > 0.95 and after > before + 0.2  # bilinear upsampling blurs the 4 x 4 grid's edges


def test_projection_init_reproduces_clips_own_patch_projection() -> None:
    backbone = load_clip("nand-toy", seed=0)
    visual = backbone.model.visual
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a LayerNorm that is not the identity
        visual.ln_post.weight.copy_(1 + 0.3 * torch.randn(backbone.vision_width, generator=generator))
        visual.ln_post.bias.copy_(0.3 * torch.randn(backbone.vision_width, generator=generator))
    raw = torch.randn(2, 5, backbone.vision_width, generator=generator)
    unit_sigma = (raw - raw.mean(-1, keepdim=True)) / raw.std(-1, unbiased=False, keepdim=True)
    tokens = 2.5 * unit_sigma + torch.randn(2, 5, 1, generator=generator)  # one σ, any per-token offset
    adapters = Adapters((1, 2), backbone.vision_width, backbone.embed_dim, seed=0)
    init_from_projection(adapters, backbone, [tokens, tokens])
    expected = torch.nn.functional.normalize(visual.ln_post(tokens[:, 1:]) @ visual.proj, dim=-1)
    for projected in adapters([tokens, tokens]):
        torch.testing.assert_close(projected, expected, atol=1e-4, rtol=0)


def test_projection_init_refuses_a_tower_without_projection() -> None:
    backbone = load_clip("nand-toy", seed=0)
    adapters = Adapters((1,), backbone.vision_width, backbone.embed_dim, seed=0)
    backbone.model.visual.proj = None
    with pytest.raises(ValueError, match="nand-toy.*no ln_post"):
        init_from_projection(adapters, backbone, [torch.zeros(1, 2, backbone.vision_width)])


def test_unknown_init_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="init: expected one of"):
        AdapterTraining(init="identity")


def test_aux_set_without_masks_is_refused(tmp_path) -> None:
    for kind in ("good", "hole"):
        folder = tmp_path / "aux" / "coin" / "test" / kind
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / "000.png")
    with pytest.raises(ValueError, match="has no mask"):
        read_masked_dataset(tmp_path / "aux")
    (tmp_path / "aux" / "coin" / "test" / "hole" / "000.png").unlink()
    with pytest.raises(ValueError, match="no defect image with a mask"):
        read_masked_dataset(tmp_path / "aux")


def test_missing_aux_folder_is_refused(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no folder"):
        read_masked_dataset(tmp_path / "nowhere")
