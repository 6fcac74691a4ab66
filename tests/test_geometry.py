"""Map alignment: cutting a detector's region out of whole-image maps and masks, at 256 × 256."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import functional as TF

from nandlib.detectors.base import MapGeometry
from nandlib.geometry import FULL_IMAGE, crop_image, crop_to_region, regions_for, to_eval_grid

WIDTH, HEIGHT = 600, 300  # non-square image
# PatchCore's transform on it by hand: Resize(256) -> 512 x 256, CenterCrop(224) -> left 144, top 16.
CROP_BOX = (144 / 512, 16 / 256, 368 / 512, 240 / 256)


def _ramp(height, width):
    """A linear function of the fractional pixel-centre position (bilinear sampling is exact on it)."""
    v = (torch.arange(height, dtype=torch.float64) + 0.5) / height
    u = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    return (3 * u[None, :] - 2 * v[:, None] + 1).float()


def test_patchcore_region_of_a_non_square_image_matches_its_transform():
    region = MapGeometry(resize=256, crop=224).region(WIDTH, HEIGHT)
    assert np.allclose(region, CROP_BOX)
    assert regions_for(MapGeometry(resize=518), [(WIDTH, HEIGHT)]) == [FULL_IMAGE]


def test_crop_of_a_full_image_map_matches_manual_computation():
    full = _ramp(518, 518)[None]  # e.g. A_sup on the squashed 518 x 518 image
    cropped = crop_to_region(full, MapGeometry(256, 224).region(WIDTH, HEIGHT), size=256)
    x0, y0, x1, y1 = CROP_BOX
    centres = (np.arange(256) + 0.5) / 256
    u, v = x0 + centres * (x1 - x0), y0 + centres * (y1 - y0)
    expected = 3 * u[None, :] - 2 * v[:, None] + 1
    assert cropped.shape == (1, 256, 256)
    assert np.allclose(cropped[0].numpy(), expected, atol=1e-5)


def test_crop_matches_what_patchcore_sees_of_a_smooth_map():
    v, u = torch.meshgrid(torch.linspace(0, 1, HEIGHT), torch.linspace(0, 1, WIDTH), indexing="ij")
    full = torch.sin(3 * u) * torch.cos(2 * v)  # a smooth map at the original resolution
    seen = TF.center_crop(TF.resize(full[None], 256, antialias=True), [224, 224])
    seen = F.interpolate(seen[None], size=(256, 256), mode="bilinear", align_corners=False)[0]
    ours = crop_to_region(full[None], MapGeometry(256, 224).region(WIDTH, HEIGHT), size=256)
    assert (ours - seen).abs().max() < 2e-3  # a 2-pixel shift of the box gives 8e-3


def test_mask_crop_is_nearest_and_binary():
    mask = torch.zeros(1, HEIGHT, WIDTH, dtype=torch.bool)
    mask[0, 100:200, 250:400] = True
    cropped = crop_to_region(mask, CROP_BOX, size=256, mode="nearest")
    assert set(cropped.unique().tolist()) <= {0.0, 1.0}
    centres = (np.arange(256) + 0.5) / 256
    x0, y0, x1, y1 = CROP_BOX
    cols = np.clip(np.rint((x0 + centres * (x1 - x0)) * WIDTH - 0.5), 0, WIDTH - 1).astype(int)
    rows = np.clip(np.rint((y0 + centres * (y1 - y0)) * HEIGHT - 0.5), 0, HEIGHT - 1).astype(int)
    assert np.array_equal(cropped[0].numpy().astype(bool), mask[0].numpy()[np.ix_(rows, cols)])


def test_to_eval_grid_is_a_plain_bilinear_resize():
    maps = torch.rand(2, 37, 50, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(maps[:, None], size=(256, 256), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(to_eval_grid(maps), expected, atol=1e-5)


def test_regions_apply_per_image_and_bad_input_is_named():
    maps = torch.stack([_ramp(64, 64), _ramp(64, 64)])
    boxes = [FULL_IMAGE, (0.0, 0.0, 0.5, 0.5)]
    both = crop_to_region(maps, boxes, size=32)
    assert torch.allclose(both[0], crop_to_region(maps[:1], FULL_IMAGE, size=32)[0])
    assert torch.allclose(both[1], crop_to_region(maps[1:], boxes[1], size=32)[0])
    with pytest.raises(ValueError, match="regions"):
        crop_to_region(maps, [FULL_IMAGE], size=32)
    with pytest.raises(ValueError, match="mode"):
        crop_to_region(maps, FULL_IMAGE, mode="bicubic")
    with pytest.raises(ValueError, match="full_image_maps"):
        crop_to_region(maps[0], FULL_IMAGE)


def test_displayed_image_lies_under_its_mask():
    """The picture shown beside a PatchCore map is cut from the same box as the mask (a bright block)."""
    pixels = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    pixels[100:200, 250:400] = (255, 128, 0)
    mask = torch.from_numpy(pixels[..., 0] > 0)[None]
    shown = crop_image(Image.fromarray(pixels), CROP_BOX)
    cut_mask = crop_to_region(mask, CROP_BOX, mode="nearest")[0].bool().numpy()
    assert shown.dtype == np.uint8 and shown.shape == (256, 256, 3)
    assert (shown[cut_mask][:, 0] > 127).mean() > 0.98 and (shown[~cut_mask][:, 0] < 128).mean() > 0.98
    assert np.median(shown[cut_mask][:, 1]) == 128  # colours kept (edges blend bilinearly)
