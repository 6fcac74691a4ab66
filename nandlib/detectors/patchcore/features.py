"""PatchCore's patch features: ImageNet ResNet backbone and locally aware aggregation.

Follows the official implementation (amazon-science/patchcore-inspection, ``patchcore.py``
``PatchMaker``/``_embed``, ``common.py`` ``Preprocessing``/``Aggregator``) step by step; see
the notes in ``reference-implementations.md`` §3.1. Book: ``method.md``, "PatchCore".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms
from torchvision.models import ResNet

from nandlib.checkpoints import as_state_dict, file_fingerprint, load_state_dict, provenance, read_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Top-level children of a torchvision ResNet whose outputs are feature maps, in forward order.
RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def image_transform(resize: int, crop: int) -> transforms.Compose:
    """The official input transform: short side to ``resize`` (bilinear), centre crop, ImageNet norm."""
    return transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def load_backbone(name: str, weights: str | Path | None, seed: int) -> tuple[ResNet, str, str]:
    """Build a torchvision ResNet-family model and load its weights.

    Args:
        name: torchvision model name, e.g. ``"wide_resnet50_2"`` (the official ``wideresnet50``).
        weights: ``None`` for torchvision's default random init under ``torch.manual_seed(seed)``;
            ``"imagenet"`` for torchvision's ``IMAGENET1K_V1`` weights (what the official
            ``pretrained=True`` loads; downloaded once); or the path of a local torchvision state dict
            (e.g. ``wide_resnet50_2-95faca4d.pth``), loaded strictly.
        seed: Seed of the random initialisation; the global RNG state is left untouched.

    Returns:
        The model in eval mode on CPU, a provenance string for its weights (with a file's path), and what
        identifies them in cache keys (for a file, its content: ``"checkpoint sha256:<64 hex> size:<n>"``).

    Raises:
        ValueError: Unknown or non-ResNet ``name``.
        CheckpointError: A weights file that is empty, unreadable, not a state dict, or does not fit the
            model (a ``ValueError``; the message names the file).
        FileNotFoundError: ``weights`` is neither ``None``, ``"imagenet"`` nor an existing file.
        RuntimeError: The ImageNet weights could not be downloaded.
    """
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"backbone: unknown torchvision model {name!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.get_model(name, weights=None)
    if not isinstance(model, ResNet):
        raise ValueError(f"backbone: {name!r} is not a torchvision ResNet, the only family supported")
    if weights is None:
        return model.eval(), f"random-init seed {seed}", f"random-init seed {seed}"
    if weights == "imagenet":
        imagenet = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        try:
            state = imagenet.get_state_dict(progress=False)
        except OSError as err:
            raise RuntimeError(
                f"weights='imagenet': could not download {imagenet.url} ({err}); "
                "pass the path of a local copy as weights= instead"
            ) from err
        model.load_state_dict(state, strict=True)
        return model.eval(), f"torchvision:{name}.IMAGENET1K_V1", f"torchvision:{name}.IMAGENET1K_V1"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights: no file at {path} (give None, 'imagenet' or a state-dict path)")
    state = read_checkpoint(path, "weights")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = as_state_dict(state, path, "weights")
    load_state_dict(model, state, path, "weights", f"torchvision {name}")
    return model.eval(), provenance(path), f"checkpoint {file_fingerprint(path)}"


def check_layers(layers: Sequence[str]) -> tuple[str, ...]:
    """Validate layer names: distinct ResNet stages in forward order (the first sets the patch grid).

    Raises:
        ValueError: Empty, unknown, repeated or out-of-order names.
    """
    layers = tuple(layers)
    if not layers or any(layer not in RESNET_STAGES for layer in layers):
        raise ValueError(f"layers: need one or more of {RESNET_STAGES}, got {layers}")
    positions = [RESNET_STAGES.index(layer) for layer in layers]
    if positions != sorted(set(positions)):
        raise ValueError(f"layers: must be distinct and in forward order, got {layers}")
    return layers


@torch.no_grad()
def extract_layers(backbone: ResNet, images: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
    """Run ``backbone`` up to the last of ``layers`` only and return those stages' outputs.

    Equivalent to the official forward hooks on each layer's last block that abort the forward pass
    after the last requested layer (``common.py::NetworkFeatureAggregator``).
    """
    wanted = check_layers(layers)
    outputs: dict[str, torch.Tensor] = {}
    x = images
    for name, module in backbone.named_children():
        x = module(x)
        if name in wanted:
            outputs[name] = x
        if name == wanted[-1]:
            break
    return [outputs[name] for name in wanted]


def _pool_within_channels(feature_map: torch.Tensor, patch_size: int, bins: int) -> torch.Tensor:
    """The official first pooling when ``pretrain_dim = bins · C``, without unfolding.

    ``adaptive_avg_pool1d`` of the ``C·p²`` vector to ``bins · C`` values puts every bin inside one channel's
    ``p²`` neighbourhood (bin ``j`` of channel ``k`` averages positions ``⌊j·p²/bins⌋`` to
    ``⌈(j+1)·p²/bins⌉ − 1``, the same for every channel), so it is a depthwise convolution with ``bins``
    fixed averaging kernels over the zero-padded neighbourhood: ``[B, bins · C, h, w]``, channel-major like
    the official output. WideResNet50: layer2 (512 channels, two bins of 5) and layer3 (1024, one bin of 9).
    """
    channels = feature_map.shape[1]
    cells = patch_size * patch_size
    kernels = torch.zeros(bins, cells, dtype=feature_map.dtype, device=feature_map.device)
    for j in range(bins):
        start, end = (j * cells) // bins, -((-(j + 1) * cells) // bins)
        kernels[j, start:end] = 1.0 / (end - start)
    weight = kernels.view(bins, 1, patch_size, patch_size).repeat(channels, 1, 1, 1)
    return F.conv2d(feature_map, weight, padding=(patch_size - 1) // 2, groups=channels)


def aggregate_patches(
    maps: Sequence[torch.Tensor], patch_size: int, pretrain_dim: int, target_dim: int
) -> torch.Tensor:
    """Locally aware patch features of PatchCore (paper Sec. 3.1), as the official code computes them.

    Official order, per layer: unfold ``patch_size``² neighbourhoods (zero padding) → bilinearly
    resize every ``C × p × p`` component from the layer's grid to the first layer's grid →
    ``adaptive_avg_pool1d`` of the flattened ``C·p²`` vector to ``pretrain_dim``; then stack the
    layers and ``adaptive_avg_pool1d`` the ``L·pretrain_dim`` vector to ``target_dim``.

    All three steps are linear and the resize acts on each component separately, so this function
    pools first and resizes the ``pretrain_dim`` pooled channels instead of the ``C·p²`` unfolded
    ones (9× fewer for layer3); where ``pretrain_dim`` is a multiple of ``C`` (both WideResNet50 layers)
    nothing is unfolded (:func:`_pool_within_channels`). The result equals the official one up to float
    rounding.

    Args:
        maps: Feature maps ``[B, C_l, H_l, W_l]``; the first map's grid is the patch grid.
        patch_size: Odd neighbourhood size ``p``.
        pretrain_dim: Per-layer dimension after the first pooling.
        target_dim: Final feature dimension.

    Returns:
        Patch features ``[B, H_0 · W_0, target_dim]``, positions in row-major order.
    """
    height, width = maps[0].shape[-2:]
    pooled = []
    for feature_map in maps:
        batch, channels, h, w = feature_map.shape
        if pretrain_dim % channels == 0:
            layer = _pool_within_channels(feature_map, patch_size, pretrain_dim // channels)
        else:
            # [B, C·p², h·w], the C·p² axis ordered (channel, row, column) like the official flattening.
            unfolded = F.unfold(feature_map, kernel_size=patch_size, padding=(patch_size - 1) // 2)
            # Pooling the C·p² axis with output (pretrain_dim, h·w) leaves the position axis untouched and
            # takes the same bins as the official adaptive_avg_pool1d over each position's vector.
            layer = F.adaptive_avg_pool2d(unfolded.unsqueeze(1), (pretrain_dim, h * w))
            layer = layer.view(batch, pretrain_dim, h, w)
        if (h, w) != (height, width):
            layer = F.interpolate(layer, size=(height, width), mode="bilinear", align_corners=False)
        pooled.append(layer.flatten(2).transpose(1, 2))  # [B, H·W, pretrain_dim]
    stacked = torch.stack(pooled, dim=2)  # [B, H·W, L, pretrain_dim]
    batch = stacked.shape[0]
    flat = stacked.reshape(batch * height * width, 1, -1)
    return F.adaptive_avg_pool1d(flat, target_dim).view(batch, height * width, target_dim)
