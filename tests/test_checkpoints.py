"""Weight files: loaders name the file and the problem, combined checkpoints load, keys follow content."""

import os
import re

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from nandlib.adapters import Adapters
from nandlib.backbones import load_clip
from nandlib.cache import FeatureCache
from nandlib.checkpoints import CheckpointError, file_fingerprint
from nandlib.detectors.patchcore import PatchCore, load_backbone


@pytest.fixture(scope="module")
def tiny():
    return load_clip("nand-tiny-p14", image_size=56, seed=0)


def _adapters(seed: int = 0) -> Adapters:
    return Adapters((1, 2, 3, 4), 64, 32, seed=seed)


# loader, a valid payload, and how a payload is wrapped where that loader looks for its state dict
LOADERS = {
    "clip": (
        lambda path: load_clip("nand-tiny-p14", checkpoint=path, image_size=56),
        lambda: load_clip("nand-tiny-p14", image_size=56, seed=1).model.state_dict(),
        lambda state: state,
    ),
    "adapters": (
        lambda path: _adapters().load(path),
        lambda: {"trainable_linearlayer": _adapters(seed=1).state_dict()},
        lambda state: {"trainable_linearlayer": state},
    ),
    "patchcore": (
        lambda path: load_backbone("resnet18", path, seed=0),
        lambda: torchvision.models.resnet18().state_dict(),
        lambda state: state,
    ),
}


def _write(path, case: str, loader: str) -> None:
    _, valid, wrap = LOADERS[loader]
    if case in ("empty", "truncated", "text"):
        torch.save(valid(), path)
        data = path.read_bytes()
        path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "text": b"weights: none"}[case])
    elif case == "not a state dict":
        torch.save(wrap({"epoch": 3, "lr": 0.1}), path)
    else:  # another architecture: a dozen keys the model does not have
        torch.save(wrap({f"head.{i}.weight": torch.zeros(2) for i in range(12)}), path)


EXPECTED = {
    "empty": r"the file is empty \(0 bytes\)",
    "truncated": r"truncated or not a torch file \(\d+ bytes; \w+: ",
    "text": "truncated or not a torch file",
    "not a state dict": r"not a state dict: 'epoch', 'lr' hold no tensors",
    "wrong architecture": r"does not fit .*\d+ missing keys: .*; 12 unexpected keys: 'head.0.weight', "
    r"'head.1.weight', 'head.2.weight', 'head.3.weight', 'head.4.weight' and 7 more$",
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_checkpoint_raises_checkpoint_error_naming_file_and_problem(tmp_path, loader, case):
    path = tmp_path / f"{case.replace(' ', '_')}.pth"
    _write(path, case, loader)
    with pytest.raises(CheckpointError, match=EXPECTED[case]) as caught:
        LOADERS[loader][0](path)
    assert isinstance(caught.value, ValueError) and str(path) in str(caught.value)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_archive_is_read_as_one(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(nn.Linear(2, 2)).save(str(path))  # OpenAI's releases are TorchScript archives
    with pytest.raises(CheckpointError, match=r"unexpected keys: 'weight', 'bias'$"):
        load_clip("nand-tiny-p14", checkpoint=path)


def test_combined_clip_and_linear_checkpoint_loads_in_both_loaders(tiny, tmp_path):
    adapters = _adapters(seed=7)
    path = tmp_path / "combined.pth"
    torch.save({"clip": tiny.model.state_dict(), "linear": adapters.state_dict()}, path)
    clip = load_clip("nand-tiny-p14", checkpoint=path, image_size=56, seed=3)
    expected = tiny.model.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in clip.model.state_dict().items())
    loaded = _adapters().load(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), adapters.parameters(), strict=True))
    assert loaded.weights.startswith(f"checkpoint:{path} sha256:")


def test_clip_cache_key_follows_checkpoint_content_not_path(tiny, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    torch.save(tiny.model.state_dict(), tmp_path / "a" / "clip.pt")
    monkeypatch.chdir(tmp_path)
    relative = load_clip("nand-tiny-p14", checkpoint="a/clip.pt", image_size=56)
    absolute = load_clip("nand-tiny-p14", checkpoint=tmp_path / "a" / "clip.pt", image_size=56)
    os.replace(tmp_path / "a" / "clip.pt", tmp_path / "moved.pt")
    moved = load_clip("nand-tiny-p14", checkpoint=tmp_path / "moved.pt", image_size=56)
    assert relative.feature_settings() == absolute.feature_settings() == moved.feature_settings()
    assert relative.fingerprint == moved.fingerprint
    assert relative.weights != moved.weights  # provenance still says where the weights came from
    torch.save(load_clip("nand-tiny-p14", image_size=56, seed=1).model.state_dict(), tmp_path / "other.pt")
    other = load_clip("nand-tiny-p14", checkpoint=tmp_path / "other.pt", image_size=56)
    assert other.feature_settings()["weights"] != moved.feature_settings()["weights"]


def test_patchcore_cache_hits_after_its_weights_file_moves(tmp_path, monkeypatch):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet.pth")

    def build(weights):
        return PatchCore("resnet18", weights=weights, layers=("layer1", "layer2"), resize=40, crop=32,
                         pretrain_dim=16, target_dim=8, projection_dim=4, num_starts=2, sigma=0,
                         cache=FeatureCache(tmp_path / "cache"))  # fmt: skip

    calls: list[int] = []
    original = PatchCore.embed_tensor
    monkeypatch.setattr(PatchCore, "embed_tensor", lambda self, b: calls.append(len(b)) or original(self, b))
    images = [Image.fromarray(np.full((40, 40, 3), value, dtype=np.uint8)) for value in (30, 200)]
    build(tmp_path / "resnet.pth").fit(images)
    os.replace(tmp_path / "resnet.pth", tmp_path / "moved.pth")
    build(tmp_path / "moved.pth").fit(images)
    assert calls == [2]


def test_file_fingerprint_is_hashed_once_per_path_size_and_mtime(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 100)
    first = file_fingerprint(path)
    assert first.size == 100 and re.fullmatch("[0-9a-f]{64}", first.sha256)
    stat = path.stat()
    path.write_bytes(b"b" * 100)  # same size; mtime put back: taken for the same file, not hashed again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_fingerprint(path) == first
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert file_fingerprint(path).sha256 != first.sha256
