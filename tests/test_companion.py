"""The companion end to end on generated data: real per-class notebook, tables, resume, book build."""

import dataclasses
import shutil

import pytest

from nandlib.companion import (
    BOOK_DIR,
    REPO_ROOT,
    aggregate,
    build_html,
    claim_output,
    output_owner,
    write_profile,
)
from nandlib.profiles import load_profile
from nandlib.report import load_results
from nandlib.sweep import RUN_NOTEBOOK, Unit, check_parameters, run_sweep
from nandlib.tables import table2, table3

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
    assert sorted(results.loc[results["detector"] == "aprilgan", "group"]) == [
        "color",
        "cut",
        "metal",
        "thread",
    ]
    assert results[["auroc_before", "auroc_after", "pauroc_before", "pauroc_after"]].notna().all().all()


def test_tables_from_sweep(swept):
    results = load_results(swept)
    t2 = table2(results, detector="aprilgan")
    assert len(t2) == 1 + 4  # carpet's AVERAGE row and its four groups
    t3 = table3(results)
    assert len(t3) == len(DETECTORS)


def test_resumed_sweep_recomputes_nothing(swept, synth_root):
    stamps = {p: p.stat().st_mtime_ns for p in swept.glob("results/*/*")}
    status = run_sweep(load_profile("offline"), synth_root, swept, classes=["carpet"], detectors=DETECTORS)
    assert set(status["status"]) == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in swept.glob("results/*/*")} == stamps


def test_unknown_notebook_parameter_is_refused():
    with pytest.raises(ValueError, match="colour"):
        check_parameters(RUN_NOTEBOOK, {"class_name": "carpet", "colour": "red"})


def test_output_folder_of_another_profile_is_not_mixed(tmp_path):
    claim_output(tmp_path, "offline /data/a")
    claim_output(tmp_path, "offline /data/a")
    with pytest.raises(RuntimeError, match="offline /data/a"):
        claim_output(tmp_path, "paper /data/mvtec")


def test_retrained_weights_change_the_output_owner(tmp_path):
    """Same profile, same paths, new weight bytes (a retrained toy world): the old units are not resumed."""
    checkpoint = tmp_path / "clip.pt"
    checkpoint.write_bytes(b"first training")
    profile = dataclasses.replace(
        load_profile("toy"), nd={"model": "nand-toy", "clip_checkpoint": str(checkpoint)}
    )
    first = output_owner(profile, tmp_path)
    assert output_owner(profile, tmp_path) == first
    checkpoint.write_bytes(b"second training")
    assert output_owner(profile, tmp_path) != first
    assert output_owner(profile, tmp_path).startswith(f"toy {tmp_path.resolve()} weights ")


def test_book_builds_with_warnings_as_errors(swept, tmp_path):
    """The real book sources over this sweep's results, built by jupyter-book 1.x under -W."""
    shutil.copy(REPO_ROOT / "_config.yml", tmp_path / "_config.yml")
    book = shutil.copytree(BOOK_DIR, tmp_path / "book", ignore=shutil.ignore_patterns("generated"))
    shutil.copytree(swept, book / "generated")
    aggregate(book / "generated")
    results = sorted(swept.glob("results/*/*"))  # where the run notebooks' injected output_dir points
    stamps = [p.stat().st_mtime_ns for p in results]
    index = build_html("offline", book)
    assert [p.stat().st_mtime_ns for p in results] == stamps, "the book re-executed a unit's notebook"
    assert index == tmp_path / "_build" / "html" / "index.html"
    tables = (tmp_path / "_build" / "html" / "generated" / "tables.html").read_text()
    assert "Provenance" in tables and "SYNTHETIC DATA" in tables
    assert "Warning" not in tables  # no stray stderr (e.g. TqdmWarning) in the rendered page
    assert (
        Unit("carpet", "aprilgan")
        .notebook_path(tmp_path / "_build" / "html" / "generated")
        .with_suffix(".html")
        .is_file()
    )


def test_toy_profile_weights_reach_every_unit(monkeypatch, tmp_path):
    """`trained_here: toy` fills the ND CLIP, adapters and WinCLIP's CLIP into the units' parameters."""
    import dataclasses

    from nandlib.companion import resolve_weights
    from nandlib.sweep import unit_parameters

    def fake(profile, log=None):
        nd = {**profile.nd, "clip_checkpoint": "clip.pt", "adapters": "adapters.pth"}
        detectors = {
            k: {**v, "clip_checkpoint": "clip.pt"} if k.startswith("winclip") else v
            for k, v in profile.detectors.items()
        }
        return dataclasses.replace(profile, nd=nd, detectors=detectors)

    monkeypatch.setattr("nandlib.toy.train.with_toy_weights", fake)
    toy = resolve_weights(load_profile("toy"))
    winclip = unit_parameters(toy, Unit("carpet", "winclip-1"), tmp_path, tmp_path)
    assert (winclip["nd_clip_checkpoint"], winclip["adapters"]) == ("clip.pt", "adapters.pth")
    assert winclip["detector_clip_checkpoint"] == "clip.pt"
    check_parameters(RUN_NOTEBOOK, winclip)
    offline = load_profile("offline")
    assert resolve_weights(offline) is offline


def test_unknown_trained_here_is_named():
    import dataclasses

    from nandlib.companion import resolve_weights

    with pytest.raises(ValueError, match="dreamland"):
        resolve_weights(dataclasses.replace(load_profile("offline"), trained_here="dreamland"))


def test_written_profile_reloads_as_the_run_profile(tmp_path):
    """The book's pages reload the profile the sweep ran (weights filled in, its dataset root fixed)."""
    ran = dataclasses.replace(load_profile("toy"), nd={"model": "nand-toy", "clip_checkpoint": "/w/clip.pt"})
    path = write_profile(ran, tmp_path / "data", tmp_path / "profile.yaml")
    expected = dataclasses.replace(ran, data={"root": str((tmp_path / "data").resolve())})
    assert load_profile(path) == expected
