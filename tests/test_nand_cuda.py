"""APRIL-GAN and NAND on CUDA give the CPU's results (run with `pytest -m gpu` on a CUDA machine)."""

import pytest
import torch

from nandlib.backbones import load_clip
from nandlib.data import read_class
from nandlib.detectors.aprilgan import AprilGAN
from nandlib.nand import add_normality
from nandlib.run import UnitConfig, run_unit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _nand(device: str, images):
    backbone = load_clip("nand-tiny-p14", image_size=518, device=device)
    detector = add_normality(AprilGAN(backbone, "carpet"), "thread")
    return detector.predict(images)


def test_nand_on_cuda_equals_cpu(synth_root):
    images = [s.image() for s in read_class(synth_root, "carpet").test[:4]]
    cpu, cuda = _nand("cpu", images), _nand("cuda", images)
    torch.testing.assert_close(cuda.maps, cpu.maps, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(cuda.scores, cpu.scores, atol=1e-4, rtol=1e-3)


def test_run_unit_on_cuda_equals_cpu(synth_root, tmp_path):
    frames = {}
    for device in ("cpu", "cuda"):
        config = UnitConfig(
            class_name="carpet",
            detector="aprilgan",
            data_root=str(synth_root),
            output_dir=str(tmp_path / device),
            device=device,
            nd_model="nand-tiny-p14",
            nd_image_size=518,
        )
        frames[device] = run_unit(config, progress=False)
    numeric = ["auroc_before", "auroc_after", "pauroc_before", "pauroc_after"]
    assert (frames["cuda"][numeric] - frames["cpu"][numeric]).abs().max().max() < 1e-3
