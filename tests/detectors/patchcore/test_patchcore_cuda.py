"""PatchCore on CUDA gives the CPU results (run on a GPU machine: pytest -m gpu)."""

import copy

import pytest
import torch

from nandlib.detectors.patchcore import PatchCore

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    torch.testing.assert_close(actual.cpu(), expected, rtol=rtol, atol=rtol * expected.abs().max().item())


def test_cuda_matches_cpu(random_wrn50, make_images, tmp_path):
    train, test = make_images(6, seed=10, size=128), make_images(3, seed=11, size=128)
    settings = {"resize": 128, "crop": 112, "batch_size": 4, "coreset_ratio": 0.25, "score": "reweighted"}
    cpu = PatchCore(backbone=copy.deepcopy(random_wrn50), **settings)
    cuda = PatchCore(backbone=copy.deepcopy(random_wrn50), device="cuda", **settings)
    features = cpu.embed(train)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # compare the algorithm, not TF32
        _close(cuda.embed(train), features, rtol=1e-4)
    cpu.fit_features(features)
    cuda.fit_features(features)
    assert cuda.memory_bank_.device.type == "cuda"
    # Early picks are far apart, so float differences between devices cannot reorder them.
    assert torch.equal(cuda.coreset_indices_[:50], cpu.coreset_indices_[:50])
    cpu.save(tmp_path / "bank.safetensors")
    cuda.load(tmp_path / "bank.safetensors")
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        on_cuda = cuda.predict(test)
    on_cpu = cpu.predict(test)
    assert on_cuda.maps.device.type == "cpu" and on_cuda.scores.device.type == "cpu"
    _close(on_cuda.scores, on_cpu.scores, rtol=1e-3)
    _close(on_cuda.maps, on_cpu.maps, rtol=1e-3)
