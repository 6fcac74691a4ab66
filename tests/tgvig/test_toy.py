"""The toy VQGAN: seed 0's ships with nandlib, checked against its manifest; others train on first use."""

from __future__ import annotations

import json

import pytest
import torch

from nandlib.tgvig import toy
from nandlib.tgvig.generator import TOY_CONFIG, build_vqmodel, load_vqmodel
from nandlib.tgvig.toy import FILES, RECIPE, WEIGHTS, ToyVQBudget, toy_vqgan_dir, toy_vqgan_folder
from nandlib.toy.shipping import ShippedWeightsError

SMALL = {**TOY_CONFIG, "block_out_channels": [8, 8, 8], "norm_num_groups": 4, "num_vq_embeddings": 8}


def _record(seed: int) -> dict:
    return {"recipe": RECIPE, "seed": seed, "budget": ToyVQBudget().model_dump(), "code_commit": "abc"}


@pytest.fixture
def no_training(tmp_path, monkeypatch) -> list:
    """An empty user data folder; training makes a tiny random model and is recorded."""
    trained = []
    monkeypatch.setenv("NAND_HOME", str(tmp_path / "home"))

    def train(seed, budget, progress):
        trained.append(seed)
        return build_vqmodel(SMALL, seed), _record(seed)

    monkeypatch.setattr(toy, "train_toy_vqgan", train)
    return trained


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch, no_training):
    """A shipped seed-0 VQGAN made by ``ship`` in a package folder that a test may break."""
    monkeypatch.setattr(toy, "SHIPPED_DIR", tmp_path / "package" / "shipped")
    toy.save_toy_vqgan(build_vqmodel(SMALL, 0), _record(0), toy_vqgan_dir(0))
    toy.ship(0)
    for name in FILES:
        (toy_vqgan_dir(0) / name).unlink()
    return toy.SHIPPED_DIR


def test_the_shipped_vqgan_is_used_without_training(shipped_copy, no_training) -> None:
    assert toy_vqgan_folder(0) == shipped_copy / "seed0" and no_training == []
    manifest = json.loads((shipped_copy / "manifest.json").read_text())["seed0"]
    assert manifest["files"][WEIGHTS]["size"] == (shipped_copy / "seed0" / WEIGHTS).stat().st_size
    assert manifest["record"] == _record(0)
    assert toy.describe(shipped_copy / "seed0").startswith("toy VQGAN (seed 0, shipped, sha256 ")


def test_other_seeds_budgets_and_recipes_train_into_the_user_data_folder_once(
    shipped_copy, no_training, monkeypatch
) -> None:
    assert toy_vqgan_folder(3) == toy_vqgan_dir(3)
    toy_vqgan_folder(3)
    assert no_training == [3]
    monkeypatch.setattr(toy, "RECIPE", RECIPE + 1)
    assert toy_vqgan_folder(0) == toy_vqgan_dir(0) and no_training == [3, 0]


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_broken_shipped_file_is_named_with_the_command_that_retrains(
    damage, shipped_copy, no_training, damage_file
) -> None:
    target = shipped_copy / "seed0" / WEIGHTS
    damage_file(target, damage)
    with pytest.raises(ShippedWeightsError, match=damage) as error:
        toy_vqgan_folder(0)
    assert str(target) in str(error.value) and "python -m nandlib.tgvig.toy --seed 0" in str(error.value)
    assert no_training == []


def test_a_broken_shipped_file_falls_back_to_a_matching_trained_copy(shipped_copy, no_training) -> None:
    (shipped_copy / "seed0" / "config.json").unlink()
    toy.save_toy_vqgan(build_vqmodel(SMALL, 0), _record(0), toy_vqgan_dir(0))
    with pytest.warns(UserWarning, match="config.json is missing"):
        assert toy_vqgan_folder(0) == toy_vqgan_dir(0)
    assert no_training == []


REAL = pytest.mark.skipif("seed0" not in toy._manifest(), reason="seed 0's toy VQGAN is not shipped")


@REAL
def test_the_shipped_record_names_how_it_was_trained() -> None:
    record = json.loads((toy.SHIPPED_DIR / "seed0" / "training.json").read_text())
    assert record["seed"] == 0 and record["recipe"] == RECIPE
    assert record["budget"] == ToyVQBudget().model_dump()
    assert {"code_commit", "torch", "threads", "seconds"} <= set(record)
    assert "dirty" not in record["code_commit"] and record["code_commit"] != "unknown"
    assert toy_vqgan_folder(0) == toy.SHIPPED_DIR / "seed0"


@REAL
def test_the_shipped_vqgan_reconstructs_held_out_images() -> None:
    """Not a flat image: a diffusers-initialised codebook collapses to a few codes and decodes one colour."""
    model = load_vqmodel(toy.SHIPPED_DIR / "seed0").eval()
    images = toy.auxiliary_images(1, 2)  # seed 1: not the training images
    error = toy.reconstruction_error(model, images)
    with torch.no_grad():
        made = model(images).sample
    assert error["psnr"] > 18, error
    assert made.std(dim=(2, 3)).mean() > 0.5 * images.std(dim=(2, 3)).mean()


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().reshape(-1).view(torch.uint8)


@REAL
@pytest.mark.slow
def test_retraining_seed_0_on_cpu_gives_the_shipped_files_bit_for_bit(tmp_path) -> None:
    """``python -m nandlib.tgvig.toy --seed 0`` again, with the shipped record's thread count: every tensor
    of the state dict bit for bit, the weights file byte for byte, the same config. Takes as long as the
    training: ``training.json``'s ``seconds``."""
    record = json.loads((toy.SHIPPED_DIR / "seed0" / "training.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(record["threads"])
    try:
        model, made = toy.train_toy_vqgan(0, progress=False)
    finally:
        torch.set_num_threads(threads)
    toy.save_toy_vqgan(model, made, tmp_path)
    ours = load_vqmodel(toy.SHIPPED_DIR / "seed0").state_dict()
    assert model.state_dict().keys() == ours.keys()
    for key, tensor in ours.items():
        assert torch.equal(_bits(model.state_dict()[key]), _bits(tensor)), key
    assert (tmp_path / WEIGHTS).read_bytes() == (toy.SHIPPED_DIR / "seed0" / WEIGHTS).read_bytes()
    configs = [json.loads((f / "config.json").read_text()) for f in (tmp_path, toy.SHIPPED_DIR / "seed0")]
    assert configs[0] == configs[1]
    assert made["budget"] == record["budget"] and made["loss"] == record["loss"]
