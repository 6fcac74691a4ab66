"""The paper's models wired through ``generate_normals`` and ``nand generate images``, on random weights
of the same architectures (nothing is downloaded): CLIP ViT-B/16 (open_clip), the f = 16 ImageNet VQGAN."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from nandlib.cli import app
from nandlib.tgvig.generator import PAPER_CONFIG, TOY_CONFIG, build_vqmodel
from nandlib.tgvig.integrator import IntegratorSettings
from nandlib.tgvig.wordnet import DEBIAN_DIR

needs_wordnet = pytest.mark.skipif(
    not (DEBIAN_DIR / "data.noun").is_file(), reason="WordNet: apt-get install wordnet-base"
)


@pytest.mark.slow
@needs_wordnet
def test_paper_clip_and_vqgan_generate_from_one_image() -> None:
    """ViT-B/16's BPE reads every WordNet candidate (the toy CLIP few); the f = 16 VQGAN runs a round."""
    from nandlib.backbones import load_clip
    from nandlib.tgvig.pipeline import generate_normals

    clip = load_clip("ViT-B-16", seed=0)
    assert clip.weights == "random-init seed 0" and clip.image_size == 224
    original = [Image.new("RGB", (64, 64), (150, 110, 60))]
    settings = IntegratorSettings(images_per_round=2, rounds=1, n_augmented=2)
    vqmodel = build_vqmodel(PAPER_CONFIG, seed=0)
    made = generate_normals(original, "hazelnut", clip, vqmodel, settings, progress=False)
    assert "a hazelnut with cobnut" in made.choice.candidates
    assert len(made.choice.candidates) > 10 and made.prompt in made.choice.candidates
    assert [im.size for im in made.images] == [(64, 64)] * 2


@needs_wordnet
def test_generate_images_loads_the_vqgan_from_a_folder(tmp_path: Path) -> None:
    small = {**TOY_CONFIG, "block_out_channels": [16, 32, 32], "norm_num_groups": 8, "sample_size": 32}
    build_vqmodel(small, seed=0).save_pretrained(tmp_path / "vqgan")
    given = tmp_path / "given"
    given.mkdir()
    Image.new("RGB", (32, 32), (90, 90, 200)).save(given / "0.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "generate", "images", "--images", str(given), "--name", "screw", "--out", str(out),
        "--generator", str(tmp_path / "vqgan"), "--clip-model", "nand-toy", "-m", "3", "-l", "1",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "random weights" in result.output and "3 images" in result.output
    assert sorted(p.name for p in out.iterdir()) == [f"generated_{i:03d}.png" for i in range(3)]
