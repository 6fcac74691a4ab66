"""Typed configs: a misspelt key or a wrong type is refused before any work, naming the file and the key."""

import pytest
import yaml
from typer.testing import CliRunner

from nandlib.cli import app
from nandlib.config import ConfigError, load_unit_config, parse_unit_config
from nandlib.profiles import PROFILE_DIR, available_profiles, load_profile


def _broken_profile(tmp_path, change):
    raw = yaml.safe_load((PROFILE_DIR / "offline.yaml").read_text())
    change(raw)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda raw: raw["nd"]["clip"].update(modle="x"), "nd.clip.modle"),
        (lambda raw: raw.update(batch_size="many"), "batch_size"),
        (lambda raw: raw["detectors"]["winclip-1"].update(shots=-1), "shots"),
        (lambda raw: raw["detectors"]["patchcore"].update(wieghts="imagenet"), "wieghts"),
        (lambda raw: raw["detectors"]["aprilgan"].update(kind="padim"), "padim"),
        (lambda raw: raw.update(classes=["carpet", "unicorn"]), "unicorn"),
        (lambda raw: raw.update(precision="fp8"), "precision"),
        (lambda raw: raw.update(device="gpu"), "device"),
    ],
)
def test_a_bad_profile_names_its_file_and_key(tmp_path, change, key):
    path = _broken_profile(tmp_path, change)
    with pytest.raises(ConfigError) as raised:
        load_profile(path)
    assert str(path) in str(raised.value) and key in str(raised.value)


def test_a_bad_profile_is_refused_before_any_work(tmp_path):
    path = _broken_profile(tmp_path, lambda raw: raw["nd"].update(adapter="x.pth"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sweep", "--profile", str(path), "--out", str(out)])
    assert result.exit_code == 1 and "nd.adapter" in result.output and str(path) in result.output
    assert not out.exists()


def test_every_shipped_profile_parses_and_names_its_units():
    assert set(available_profiles()) == {"offline", "paper", "toy"}
    for name in ("offline", "toy"):
        profile = load_profile(name)
        assert list(profile.detectors) == ["aprilgan", "winclip-0", "winclip-1", "winclip-5", "patchcore"]
        assert [profile.detectors[d].label for d in profile.detectors] == list(profile.detectors)
    with pytest.raises(ConfigError, match="needs a dataset"):
        load_profile("paper")
    assert load_profile("paper", data_root="/mvtec").nd.clip.pretrained == "openai"


def test_a_unit_config_round_trips_through_the_notebook_parameter(tmp_path):
    unit = load_profile("offline").unit("carpet", "winclip-5", tmp_path, tmp_path / "out")
    assert load_unit_config(unit.to_json()) == unit
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(unit.model_dump(mode="json")))
    assert load_unit_config(str(path)) == unit


def test_unit_config_defaults_are_the_papers_and_bad_phrases_are_named():
    unit = parse_unit_config({"class_name": "carpet", "data_root": "d", "output_dir": "o"})
    assert (unit.nd.clip.model, unit.nd.clip.image_size, unit.label) == ("ViT-L-14-336", 518, "aprilgan")
    with pytest.raises(ConfigError, match="'scratch' is not a group of 'carpet'"):
        parse_unit_config(
            {"class_name": "carpet", "data_root": "d", "output_dir": "o", "phrases": {"scratch": ["x"]}}
        )
    with pytest.raises(ConfigError, match="class_name"):
        parse_unit_config({"data_root": "d", "output_dir": "o"})
    with pytest.raises(ConfigError, match="either pretrained or checkpoint"):
        parse_unit_config(
            {"class_name": "carpet", "data_root": "d", "output_dir": "o",
             "nd": {"clip": {"model": "m", "pretrained": "openai", "checkpoint": "c.pt"}}}
        )  # fmt: skip
