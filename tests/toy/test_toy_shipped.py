"""Seed 0's toy world ships with nandlib: used after a checksum check, retrained only when asked."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import pytest
import torch

from nandlib.checkpoints import provenance
from nandlib.profiles import load_profile
from nandlib.toy import shipping, train
from nandlib.toy.shipping import SHIPPED_DIR, ShippedWeightsError
from nandlib.toy.train import FILES, ToyBudget, resolve_toy_weights, toy_weights


@pytest.fixture
def no_training(tmp_path, monkeypatch) -> list:
    """An empty user data folder; training is recorded instead of run."""
    trained = []
    monkeypatch.setenv("NAND_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(train, "train_toy", lambda out, seed, budget, log: trained.append(seed))
    return trained


def _trained_world(folder) -> None:
    """Files as `nand toy train --seed 0` leaves them (weights not read by these tests)."""
    folder.mkdir(parents=True)
    for name in FILES[:2]:
        (folder / name).write_bytes(f"{name} trained in {folder}".encode())
    budget = asdict(train._with_seed(ToyBudget(), 0))
    record = {"recipe": train.RECIPE, "seed": 0, "budget": budget, "clip_loss": [1.0], "code_commit": "abc"}
    (folder / FILES[2]).write_text(json.dumps(record))


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """A shipped seed-0 world made by ``ship`` in a package folder that a test may break."""
    copy = tmp_path / "package" / "shipped"
    monkeypatch.setattr(shipping, "SHIPPED_DIR", copy)
    _trained_world(tmp_path / "made")
    shipping.ship(tmp_path / "made", 0)
    return copy


def _trained_copy(tmp_path) -> None:
    """A world of seed 0 with the default budget in the user data folder."""
    _trained_world(tmp_path / "home" / "toy" / "seed0")


def test_the_shipped_world_is_used_without_training(shipped_copy, no_training) -> None:
    weights = toy_weights(0)
    assert no_training == []
    assert weights.clip == shipped_copy / "seed0" / "clip.pt" and weights.info["recipe"] == train.RECIPE
    manifest = json.loads((shipped_copy / "manifest.json").read_text())["seed0"]
    assert manifest["files"]["clip.pt"]["size"] == weights.clip.stat().st_size
    assert manifest["record"]["code_commit"] == "abc" and "clip_loss" not in manifest["record"]


REAL = pytest.mark.skipif(shipping.shipped_record(0) is None, reason="seed 0's world is not shipped yet")


@REAL
def test_the_shipped_record_names_how_it_was_trained() -> None:
    record = json.loads((SHIPPED_DIR / "seed0" / "training.json").read_text())
    assert record["seed"] == 0 and record["recipe"] == train.RECIPE
    assert record["budget"] == json.loads(json.dumps(asdict(train._with_seed(ToyBudget(), 0))))
    assert {"code_commit", "torch", "threads", "seconds"} <= set(record)
    assert "dirty" not in record["code_commit"] and record["code_commit"] != "unknown"
    shipping.verified_files(0)


def test_other_seeds_and_recipes_train_into_the_user_data_folder(
    shipped_copy, no_training, monkeypatch
) -> None:
    toy_weights(3)
    monkeypatch.setattr(train, "RECIPE", train.RECIPE + 1)
    toy_weights(0)
    assert no_training == [3, 0]


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_broken_shipped_file_is_named_with_the_command_that_retrains(
    damage, shipped_copy, no_training, damage_file
) -> None:
    target = shipped_copy / "seed0" / "adapters.pth"
    damage_file(target, damage)
    with pytest.raises(ShippedWeightsError, match=damage) as error:
        toy_weights(0)
    assert str(target) in str(error.value) and "nand toy train --seed 0" in str(error.value)
    assert no_training == []


def test_a_broken_shipped_file_falls_back_to_a_matching_trained_copy(
    shipped_copy, no_training, tmp_path
) -> None:
    (shipped_copy / "seed0" / "clip.pt").unlink()
    _trained_copy(tmp_path)
    with pytest.warns(UserWarning, match="clip.pt is missing"):
        weights = toy_weights(0)
    assert weights.clip == tmp_path / "home" / "toy" / "seed0" / "clip.pt" and no_training == []


def test_provenance_names_shipped_weights_by_name_and_hash(shipped_copy, no_training) -> None:
    profile = resolve_toy_weights(load_profile("toy"))
    digest = shipping._manifest()["seed0"]["files"]["clip.pt"]["sha256"]
    assert provenance(profile.nd.clip.checkpoint) == f"toy:clip (seed 0, shipped, sha256 {digest[:12]})"
    assert provenance(profile.nd.adapters).startswith("toy:adapters (seed 0, shipped, sha256 ")


def _tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) state dict by its dotted key."""
    flat = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat |= _tensors(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def test_provenance_names_a_trained_world_by_seed_and_other_files_by_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NAND_HOME", str(tmp_path / "home"))
    _trained_copy(tmp_path)
    trained = tmp_path / "home" / "toy" / "seed0" / "clip.pt"
    assert provenance(trained).startswith("toy:clip (seed 0, trained here, sha256 ")
    elsewhere = tmp_path / "clip.pt"
    elsewhere.write_bytes(b"x")
    assert provenance(elsewhere).startswith(f"checkpoint:{elsewhere} sha256:")


@REAL
@pytest.mark.slow
def test_retraining_seed_0_on_cpu_gives_the_shipped_files_bit_for_bit(tmp_path) -> None:
    """`nand toy train --seed 0` again, with the shipped record's thread count: equal state dicts (every
    tensor bit for bit) and equal files (``torch.save`` is byte-stable for the same tensors and file name).

    Takes as long as training the world (``training.json``'s seconds; ``nand-toy-p4`` at 400 steps, about
    20 min on an idle 2-core VM).
    """
    record = json.loads((SHIPPED_DIR / "seed0" / "training.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(record["threads"])
    try:
        weights = train.train_toy(tmp_path / "seed0", 0)
    finally:
        torch.set_num_threads(threads)
    for name in FILES[:2]:
        made = _tensors(torch.load(tmp_path / "seed0" / name, weights_only=True))
        ours = _tensors(torch.load(SHIPPED_DIR / "seed0" / name, weights_only=True))
        assert made.keys() == ours.keys(), name
        for key, tensor in ours.items():
            assert made[key].dtype == tensor.dtype and made[key].shape == tensor.shape, f"{name}: {key}"
            assert torch.equal(_bits(made[key]), _bits(tensor)), f"{name}: {key}"
        assert (tmp_path / "seed0" / name).read_bytes() == (SHIPPED_DIR / "seed0" / name).read_bytes()
    assert json.loads(json.dumps(weights.info["budget"])) == record["budget"]  # tuples as JSON lists


@REAL
@pytest.mark.slow
def test_shipped_and_user_data_copies_give_identical_results_and_portable_provenance(
    synth_root, tmp_path, monkeypatch
) -> None:
    """APRIL-GAN and WinCLIP on the same weights, shipped or in the user data folder: identical frames.
    The shipped run's provenance names the weights by reference and hash, never by their path."""
    from nandlib.config import parse_unit_config
    from nandlib.outputs import OutputLayout
    from nandlib.run import run_unit

    monkeypatch.setenv("NAND_HOME", str(tmp_path / "home"))
    clip = {"model": "nand-toy-p4", "image_size": 64, "checkpoint": "toy:clip"}
    detectors = {"aprilgan": {"kind": "aprilgan"}, "winclip-1": {"kind": "winclip", "clip": clip, "shots": 1}}

    def run(out) -> None:
        for detector in detectors.values():
            for class_name in ("carpet", "bottle"):
                config = {
                    "class_name": class_name, "data_root": str(synth_root), "output_dir": str(out),
                    "nd": {"clip": clip, "adapters": "toy:adapters"}, "detector": detector,
                    "batch_size": 64, "cache_dir": "off",
                }  # fmt: skip
                run_unit(parse_unit_config(config), progress=False)

    run(tmp_path / "shipped")
    shutil.copytree(SHIPPED_DIR / "seed0", tmp_path / "home" / "toy" / "seed0")
    monkeypatch.setattr(shipping, "SHIPPED_DIR", tmp_path / "nothing shipped")
    run(tmp_path / "trained")
    for name in detectors:
        for class_name in ("carpet", "bottle"):
            made = [OutputLayout(tmp_path / run).results(name, class_name) for run in ("shipped", "trained")]
            assert made[0].read_text() == made[1].read_text(), f"{name}/{class_name}"
    record = OutputLayout(tmp_path / "shipped").provenance("winclip-1", "carpet").read_text()
    assert str(SHIPPED_DIR) not in record and "toy:clip (seed 0, shipped, sha256 " in record


def test_results_of_an_earlier_shipped_world_are_flagged() -> None:
    current = json.loads((SHIPPED_DIR / "manifest.json").read_text())["seed0"]["files"]["clip.pt"]["sha256"]
    assert shipping.earlier_world_note(f"toy:clip (seed 0, shipped, sha256 {current[:12]})") == ""
    assert shipping.earlier_world_note("toy:clip (seed 3, trained here, sha256 0123456789ab)") == ""
    other = "0123456789ab" if not current.startswith("0123456789ab") else "ba9876543210"
    note = shipping.earlier_world_note(f"toy:clip (seed 0, shipped, sha256 {other})")
    assert other in note and current[:12] in note and "earlier" in note
