"""What a book build writes for its reader: the front page's build box, portable provenance paths, the
execution cache emptied when what the pages show changed, and the playground's data in the user data
folder."""

import json
import os
from pathlib import Path

from nandlib import provenance
from nandlib.companion import (
    build_page,
    clear_stale_execution_cache,
    prepare_class_data,
    prepare_data,
)
from nandlib.config import parse_profile
from nandlib.outputs import OutputLayout
from nandlib.paths import data_home, datasets_dir, portable
from nandlib.profiles import load_profile
from nandlib.report import provenance_box


def _record(generated: Path, detector: str, date: str, commit: str, dataset: str = "synthetic") -> None:
    path = OutputLayout(generated).provenance(detector, "carpet")
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "profile": "offline", "description": "d", "dataset": dataset, "weights": {"nd_clip": "w"},
        "nandlib": "0.1.0", "commit": commit, "date": date, "machine": "m",
    }  # fmt: skip
    path.write_text(json.dumps(record))


def test_the_front_page_names_profile_commit_and_dates(tmp_path):
    _record(tmp_path, "aprilgan", "2026-01-02 10:00 UTC", "abc1234")
    _record(tmp_path, "winclip-0", "2026-01-02 11:00 UTC", "abc1234")
    page = build_page("offline", tmp_path)
    assert page.startswith("```{admonition} This build")
    assert "Profile **offline**: " + load_profile("offline").description in page
    assert f"commit `{provenance.code_commit()}`" in page
    assert "Its 2 units ran 2026-01-02 10:00 UTC – 2026-01-02 11:00 UTC at commit `abc1234`." in page


def test_provenance_boxes_write_user_data_paths_portably(tmp_path):
    root = datasets_dir() / "synth-toy-seed0-paper-64"
    assert portable(f"At {root}.") == "At <user data>/datasets/synth-toy-seed0-paper-64."
    assert portable("/elsewhere/data") == "/elsewhere/data"
    _record(tmp_path, "aprilgan", "2026-01-02 10:00 UTC", "abc", dataset=f"SYNTHETIC DATA. At {root}.")
    box = provenance_box(tmp_path).data
    assert "\\<user data>/datasets/synth-toy-seed0-paper-64" in box  # literal in Markdown, not a tag
    assert str(data_home()) not in box


def test_the_execution_cache_is_emptied_when_the_results_or_the_profile_change(tmp_path):
    build, generated = tmp_path / "_build", tmp_path / "generated"
    _record(generated, "aprilgan", "2026-01-02 10:00 UTC", "abc")
    results = OutputLayout(generated).results("aprilgan", "carpet")
    results.write_text("class,group\ncarpet,cut\n")
    cached = build / ".jupyter_cache" / "executed.txt"

    def fill() -> None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text("x")

    assert clear_stale_execution_cache(build, "offline", generated)
    fill()
    assert not clear_stale_execution_cache(build, "offline", generated) and cached.is_file()
    results.write_text("class,group\ncarpet,thread\n")
    assert clear_stale_execution_cache(build, "offline", generated) and not cached.exists()
    fill()
    assert clear_stale_execution_cache(build, "toy", generated) and not cached.exists()


def test_the_playground_generates_one_class_once_or_takes_the_books_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("NAND_HOME", str(tmp_path / "home"))
    raw = load_profile("offline").model_dump()
    raw["data"]["synthetic"] |= {"size": 32}
    raw["classes"] = ["carpet", "bottle"]
    profile = parse_profile(raw)
    root = prepare_class_data(profile, "carpet")
    assert root.parent == datasets_dir() and root.name.endswith("-carpet")
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["carpet"]
    stamp = os.stat(root / "README.txt").st_mtime_ns
    assert prepare_class_data(profile, "carpet") == root
    assert os.stat(root / "README.txt").st_mtime_ns == stamp  # generated once
    whole = prepare_data(profile)
    assert prepare_class_data(profile, "bottle") == whole


def test_a_generated_dataset_gains_the_classes_a_later_profile_asks_for(tmp_path, monkeypatch):
    monkeypatch.setenv("NAND_HOME", str(tmp_path / "home"))
    raw = load_profile("offline").model_dump()
    raw["data"]["synthetic"] |= {"size": 32}
    raw["classes"] = ["carpet"]
    root = prepare_data(parse_profile(raw))
    carpet = (root / "carpet" / "test" / "good" / "000.png").read_bytes()
    raw["classes"] = ["bottle", "carpet"]
    assert prepare_data(parse_profile(raw)) == root
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["bottle", "carpet"]
    assert (root / "carpet" / "test" / "good" / "000.png").read_bytes() == carpet  # the same images
    raw["classes"] = ["bottle"]
    assert prepare_data(parse_profile(raw)) == root  # a subset: nothing generated
    assert (root / "carpet").is_dir()
