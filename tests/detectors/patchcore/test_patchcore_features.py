"""PatchCore features: backbone loading, layer extraction and the official local aggregation."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

from nandlib.detectors.patchcore.features import (
    aggregate_patches,
    check_layers,
    extract_layers,
    image_transform,
    load_backbone,
)


def official_aggregation(maps, patch_size, pretrain_dim, target_dim):
    """Direct transcription of the official steps: unfold → resize every component → pool → stack → pool."""
    pad = (patch_size - 1) // 2
    height, width = maps[0].shape[-2:]
    per_layer = []
    for feature_map in maps:
        batch, channels, h, w = feature_map.shape
        patches = F.unfold(feature_map, kernel_size=patch_size, padding=pad)
        patches = patches.reshape(batch, channels, patch_size, patch_size, h * w).permute(0, 4, 1, 2, 3)
        if (h, w) != (height, width):
            grid = patches.reshape(batch, h, w, channels, patch_size, patch_size).permute(0, 3, 4, 5, 1, 2)
            grid = F.interpolate(grid.reshape(-1, 1, h, w), size=(height, width), mode="bilinear")
            grid = grid.reshape(batch, channels, patch_size, patch_size, height, width)
            patches = grid.permute(0, 4, 5, 1, 2, 3).reshape(
                batch, height * width, channels, patch_size, patch_size
            )
        flat = patches.reshape(-1, 1, channels * patch_size * patch_size)
        per_layer.append(F.adaptive_avg_pool1d(flat, pretrain_dim).squeeze(1))
    stacked = torch.stack(per_layer, dim=1)
    pooled = F.adaptive_avg_pool1d(stacked.reshape(len(stacked), 1, -1), target_dim)
    return pooled.reshape(maps[0].shape[0], height * width, target_dim)


@pytest.mark.parametrize(
    ("shapes", "patch_size", "pretrain_dim", "target_dim"),
    [
        ([(2, 16, 8, 8), (2, 32, 4, 4)], 3, 40, 24),  # overlapping bins (144/40, 288/40, 80/24)
        ([(1, 6, 7, 5), (1, 10, 4, 3), (1, 4, 2, 2)], 5, 33, 50),  # 3 layers, odd grids, upsampling dims
        ([(2, 8, 6, 6)], 1, 8, 8),  # one layer, no neighbourhood
        ([(2, 4, 6, 6), (2, 8, 3, 3)], 3, 24, 16),  # pooled within channels: 6 bins of 1.5, 3 bins of 3
        ([(1, 3, 5, 5)], 5, 6, 6),  # two overlapping bins of 12.5 per 5 x 5 neighbourhood
    ],
)
def test_aggregation_equals_official_steps(shapes, patch_size, pretrain_dim, target_dim):
    generator = torch.Generator().manual_seed(0)
    maps = [torch.randn(shape, generator=generator) for shape in shapes]
    ours = aggregate_patches(maps, patch_size, pretrain_dim, target_dim)
    torch.testing.assert_close(ours, official_aggregation(maps, patch_size, pretrain_dim, target_dim))


def test_aggregation_equals_official_steps_at_paper_shapes():
    generator = torch.Generator().manual_seed(1)
    maps = [
        torch.randn(1, 512, 28, 28, generator=generator),
        torch.randn(1, 1024, 14, 14, generator=generator),
    ]
    ours = aggregate_patches(maps, 3, 1024, 1024)
    assert ours.shape == (1, 784, 1024)
    torch.testing.assert_close(ours, official_aggregation(maps, 3, 1024, 1024), rtol=1e-5, atol=1e-6)


def test_aggregation_of_nine_to_one_layer_is_local_mean():
    # C·9 → C pooling averages each channel's 3×3 zero-padded neighbourhood (notes §3.1, layer3).
    feature_map = torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(2))
    local_mean = F.avg_pool2d(feature_map, 3, stride=1, padding=1, count_include_pad=True)
    ours = aggregate_patches([feature_map], 3, 4, 4)
    torch.testing.assert_close(ours, local_mean.flatten(2).transpose(1, 2))


def test_extract_layers_equals_forward_hooks():
    model = torchvision.models.resnet18().eval()
    hooked = {}
    for name in ("layer2", "layer3"):
        getattr(model, name)[-1].register_forward_hook(
            lambda _m, _i, out, name=name: hooked.update({name: out})
        )
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model(images)
    layer2, layer3 = extract_layers(model, images, ("layer2", "layer3"))
    torch.testing.assert_close(layer2, hooked["layer2"], rtol=0, atol=0)
    torch.testing.assert_close(layer3, hooked["layer3"], rtol=0, atol=0)


@pytest.mark.parametrize("layers", [(), ("layer3", "layer2"), ("layer2", "layer2"), ("fc",), ("layer5",)])
def test_check_layers_rejects_bad_lists(layers):
    with pytest.raises(ValueError, match="layers"):
        check_layers(layers)


def test_random_backbone_is_torchvision_default_init_and_keeps_global_rng():
    state = torch.random.get_rng_state()
    model, provenance, _ = load_backbone("resnet18", None, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(5)
    expected = torchvision.models.resnet18()
    for (name, ours), theirs in zip(model.state_dict().items(), expected.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name
    assert provenance == "random-init seed 5"
    assert not model.training


def test_backbone_from_state_dict_file(tmp_path):
    source, _, _ = load_backbone("resnet18", None, seed=1)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model, provenance, _ = load_backbone("resnet18", path, seed=0)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert provenance.startswith(f"checkpoint:{path} sha256:")


def test_backbone_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights"):
        load_backbone("resnet18", tmp_path / "missing.pth", seed=0)
    incomplete = tmp_path / "incomplete.pth"
    state = torchvision.models.resnet18().state_dict()
    del state["fc.bias"]
    torch.save(state, incomplete)
    with pytest.raises(ValueError, match="incomplete.pth"):
        load_backbone("resnet18", incomplete, seed=0)
    with pytest.raises(ValueError, match="backbone"):
        load_backbone("no_such_net", None, seed=0)
    with pytest.raises(ValueError, match="not a torchvision ResNet"):
        load_backbone("squeezenet1_0", None, seed=0)


def test_transforms_resize_short_side_then_crop():
    from PIL import Image

    image = Image.new("RGB", (120, 80), (255, 0, 0))
    tensor = image_transform(64, 56)(image)
    assert tensor.shape == (3, 56, 56)
    torch.testing.assert_close(
        tensor[:, 0, 0], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225])
    )


def test_imagenet_weights_are_torchvision_v1(monkeypatch):
    requested = []
    source = torchvision.models.resnet18().state_dict()

    def fake_download(weights, progress=True):
        requested.append(weights)
        return source

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", fake_download)
    model, provenance, _ = load_backbone("resnet18", "imagenet", seed=0)
    assert requested == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1]
    assert torch.equal(model.fc.weight, source["fc.weight"])
    assert provenance == "torchvision:resnet18.IMAGENET1K_V1"


def test_imagenet_weights_offline_error_says_what_to_do(monkeypatch):
    from urllib.error import URLError

    def offline(weights, progress=True):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="local copy"):
        load_backbone("resnet18", "imagenet", seed=0)
