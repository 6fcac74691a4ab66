"""The companion end to end on generated data: real per-class notebook, tables, resume, book build."""

import shutil
from pathlib import Path

import pytest

from nandlib.companion import (
    aggregate,
    build_html,
    claim_output,
    resolve_weights,
    write_profile,
)
from nandlib.config import parse_profile
from nandlib.outputs import OutputLayout
from nandlib.profiles import load_profile
from nandlib.report import load_results
from nandlib.sweep import check_parameters, notebook, run_sweep, unit_configs
from nandlib.tables import table2, table3

CHECKOUT = Path(__file__).resolve().parents[1]
DETECTORS = ["aprilgan", "winclip-0"]


@pytest.fixture(scope="module")
def swept(synth_root, tmp_path_factory):
    """The offline profile's real run notebook on carpet, for APRIL-GAN and WinCLIP-0 (tiny models)."""
    out = tmp_path_factory.mktemp("companion") / "generated"
    status = run_sweep(
        load_profile("offline"), synth_root, out, classes=["carpet"], detectors=DETECTORS, workers=2
    )
    assert list(status["status"]) == ["done", "done"], status.to_string()
    return out


def test_results_have_one_row_per_group_and_detector(swept):
    results = load_results(swept)
    assert sorted(results["detector"].unique()) == sorted(DETECTORS)
    groups = sorted(results.loc[results["detector"] == "aprilgan", "group"])
    assert groups == ["color", "cut", "metal", "thread"]
    assert results[["auroc_before", "auroc_after", "pauroc_before", "pauroc_after"]].notna().all().all()


def test_tables_from_sweep(swept):
    results = load_results(swept)
    assert len(table2(results, detector="aprilgan")) == 1 + 4  # carpet's AVERAGE row and its four groups
    assert len(table3(results)) == len(DETECTORS)


def test_resumed_sweep_recomputes_nothing(swept, synth_root):
    stamps = {p: p.stat().st_mtime_ns for p in swept.glob("results/*/*")}
    status = run_sweep(load_profile("offline"), synth_root, swept, classes=["carpet"], detectors=DETECTORS)
    assert set(status["status"]) == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in swept.glob("results/*/*")} == stamps


def test_the_run_notebook_takes_one_parameter():
    check_parameters(notebook("run_class"), {"config": "{}"})
    with pytest.raises(ValueError, match="class_name"):
        check_parameters(notebook("run_class"), {"config": "{}", "class_name": "carpet"})


def test_output_folder_of_another_profile_is_not_mixed(tmp_path):
    claim_output(tmp_path, "offline")
    claim_output(tmp_path, "offline")
    with pytest.raises(RuntimeError, match="profile 'offline', not 'paper'"):
        claim_output(tmp_path, "paper")


def test_book_builds_with_warnings_as_errors(swept, tmp_path):
    """The real book sources over this sweep's results, built by jupyter-book 1.x under -W."""
    shutil.copy(CHECKOUT / "_config.yml", tmp_path / "_config.yml")
    book = shutil.copytree(CHECKOUT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("generated"))
    shutil.copytree(swept, book / "generated")
    aggregate(book / "generated")
    results = sorted(swept.glob("results/*/*"))  # where the run notebooks' configs point
    stamps = [p.stat().st_mtime_ns for p in results]
    index = build_html("offline", book)
    assert [p.stat().st_mtime_ns for p in results] == stamps, "the book re-executed a unit's notebook"
    assert index == tmp_path / "_build" / "html" / "index.html"
    tables = (tmp_path / "_build" / "html" / "generated" / "tables.html").read_text()
    assert "Provenance" in tables and "SYNTHETIC DATA" in tables
    assert "Warning" not in tables  # no stray stderr (e.g. TqdmWarning) in the rendered page
    front = (tmp_path / "_build" / "html" / "intro.html").read_text()
    assert "This build" in front and "Profile <strong>offline</strong>" in front
    record = OutputLayout(tmp_path / "_build" / "html" / "generated").run_record("aprilgan", "carpet")
    assert record.with_suffix(".html").is_file()


def test_toy_references_reach_every_unit(monkeypatch, tmp_path):
    """`toy:clip` and `toy:adapters` become the toy world's files: ND CLIP, adapters and WinCLIP's CLIP."""
    from nandlib.toy import train

    fake = train.ToyWeights(Path("/w/clip.pt"), Path("/w/adapters.pth"), Path("/w/training.json"))
    monkeypatch.setattr(train, "toy_weights", lambda seed, log=None: fake)
    toy = resolve_weights(load_profile("toy"))
    (winclip,) = unit_configs(toy, tmp_path, tmp_path, classes=["carpet"], detectors=["winclip-1"]).values()
    assert (winclip.nd.clip.checkpoint, winclip.nd.adapters) == ("/w/clip.pt", "/w/adapters.pth")
    assert winclip.detector.settings.clip.checkpoint == "/w/clip.pt"
    offline = load_profile("offline")
    assert resolve_weights(offline) is offline


def test_unknown_toy_reference_is_named(monkeypatch):
    raw = load_profile("toy").model_dump()
    raw["nd"]["adapters"] = "toy:dreamland"
    with pytest.raises(ValueError, match="dreamland"):
        resolve_weights(parse_profile(raw))


def test_written_profile_reloads_as_the_run_profile(tmp_path):
    """The book's pages reload the profile the sweep ran (weights filled in, its dataset root fixed)."""
    raw = load_profile("toy").model_dump()
    raw["nd"]["clip"]["checkpoint"] = "/w/clip.pt"
    ran = parse_profile(raw)
    path = write_profile(ran, tmp_path / "data", tmp_path / "profile.yaml")
    assert load_profile(path) == ran.model_copy(update={"data": load_profile(path).data})
    assert load_profile(path).data.root == str((tmp_path / "data").resolve())


@pytest.mark.slow
def test_aggregates_rerun_only_when_their_inputs_change(swept, tmp_path):
    out = shutil.copytree(swept, tmp_path / "generated")
    tables = OutputLayout(out).aggregate("tables")
    assert aggregate(out) == ["tables", "figure5"]
    stamp = tables.stat().st_mtime_ns
    assert aggregate(out) == [] and tables.stat().st_mtime_ns == stamp  # a rebuild reruns nothing
    results = OutputLayout(out).results("aprilgan", "carpet")
    results.write_text(results.read_text() + "\n")  # same rows, other bytes: inputs changed
    assert aggregate(out) == ["tables", "figure5"]


def test_a_user_data_folder_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    """Issue 17: a user data folder that cannot be written is named before any data is generated (a file
    stands where the folder should be: root ignores permission bits, so a read-only folder would not do)."""
    from nandlib.companion import prepare_data
    from nandlib.profiles import load_profile

    blocked = tmp_path / "home"
    blocked.write_text("not a folder")
    monkeypatch.setenv("NAND_HOME", str(blocked))
    with pytest.raises(PermissionError, match="user data folder") as error:
        prepare_data(load_profile("toy"))
    assert str(blocked) in str(error.value)
