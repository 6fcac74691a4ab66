"""Which toy world ``toy_weights`` returns from the user data folder (seeds not shipped): a cache only when
trained with the asked budget, by this code."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict

from nandlib.toy import train
from nandlib.toy.train import FILES, ToyBudget, toy_weights


def _fake_world(folder, budget: ToyBudget, seed: int, recipe: int = train.RECIPE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES[:2]:
        (folder / name).write_bytes(b"")
    recorded = train._with_seed(budget, seed)
    (folder / FILES[2]).write_text(json.dumps({"recipe": recipe, "seed": seed, "budget": asdict(recorded)}))


def test_cache_is_reused_only_for_the_same_budget(tmp_path, monkeypatch) -> None:
    trained = []
    monkeypatch.setenv("NAND_HOME", str(tmp_path))
    monkeypatch.setattr(train, "train_toy", lambda out, seed, budget, log: trained.append((out, seed)))
    budget = ToyBudget()
    _fake_world(tmp_path / "toy" / "seed3", budget, seed=3)
    assert toy_weights(3, budget).clip == tmp_path / "toy" / "seed3" / "clip.pt" and not trained
    other = dataclasses.replace(budget, images_per_class=budget.images_per_class + 1)
    toy_weights(3, other)
    assert trained == [(tmp_path / "toy" / "seed3", 3)]


def test_cache_of_an_older_training_code_is_retrained(tmp_path, monkeypatch) -> None:
    trained = []
    monkeypatch.setenv("NAND_HOME", str(tmp_path))
    monkeypatch.setattr(train, "train_toy", lambda out, seed, budget, log: trained.append(seed))
    _fake_world(tmp_path / "toy" / "seed3", ToyBudget(), seed=3, recipe=train.RECIPE - 1)
    toy_weights(3, ToyBudget())
    assert trained == [3]


def test_cli_refuses_an_unknown_adapter_start_before_training(tmp_path) -> None:
    from typer.testing import CliRunner

    from nandlib.cli import app

    out = tmp_path / "toy"
    result = CliRunner().invoke(app, ["toy", "train", "--out", str(out), "--adapter-init", "identity"])
    assert result.exit_code == 1, result.output
    assert "identity" in result.output and not out.exists()


def test_a_world_sets_the_files_and_the_architecture_of_every_toy_clip(tmp_path) -> None:
    """The profile names ``nand-toy-p4``; a world trained as ``nand-toy`` (an ablation) loads as that."""
    from nandlib.profiles import load_profile
    from nandlib.toy.train import ToyWeights, with_toy_world

    info = {"budget": {"clip": {"model": "nand-toy"}}}
    world = ToyWeights(tmp_path / "clip.pt", tmp_path / "adapters.pth", tmp_path / "t.json", info)
    unit = load_profile("toy").unit("carpet", "winclip-1", tmp_path, tmp_path / "out")
    made = with_toy_world(unit, world).model_dump()
    for clip in (made["nd"]["clip"], made["detector"]["clip"]):
        assert (clip["model"], clip["checkpoint"]) == ("nand-toy", str(tmp_path / "clip.pt"))
    assert made["nd"]["adapters"] == str(tmp_path / "adapters.pth")
    assert with_toy_world(unit, dataclasses.replace(world, info={})).nd.clip.model == "nand-toy-p4"
