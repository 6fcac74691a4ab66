"""check_layout: a class folder's problems, all named up front, and the Table 1 groups it can still run."""

import shutil
from pathlib import Path

import pytest

from nandlib.data import anomaly_groups, check_layout, generate_dataset


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("data") / "synth", ["carpet", "toothbrush"], size=32)


@pytest.fixture
def root(generated: Path, tmp_path: Path) -> Path:
    """A fresh copy of the generated dataset, to remove folders from."""
    return Path(shutil.copytree(generated, tmp_path / "synth"))


def _empty(folder: Path) -> None:
    for png in folder.glob("*.png"):
        png.unlink()


def test_complete_class_has_no_problems_and_every_group(root: Path):
    check = check_layout(root, "carpet")
    assert check.ok and check.problems == () and check.notes == () and check.missing_groups == {}
    assert check.present_groups == tuple(anomaly_groups("carpet"))
    check.raise_for_problems()
    toothbrush = check_layout(root, "toothbrush")  # no Table 1 groups: nothing to skip
    assert toothbrush.ok and toothbrush.present_groups == () and toothbrush.missing_groups == {}


def test_group_without_test_images_is_reported_and_the_rest_can_run(root: Path):
    test = root / "carpet" / "test"
    shutil.rmtree(test / "cut")  # group "cut" is cut + hole
    _empty(test / "hole")
    shutil.rmtree(test / "thread")  # group "thread"
    _empty(test / "color")
    check = check_layout(root, "carpet")
    assert check.ok and check.present_groups == ("metal",)
    assert check.missing_groups == {
        "thread": (str(test / "thread"),), "color": (str(test / "color"),),
        "cut": (str(test / "cut"), str(test / "hole")),
    }  # fmt: skip
    assert f"empty test folder {test / 'hole'}" in check.notes
    assert any("'cut' has no test images" in note and str(test / "hole") in note for note in check.notes)


def test_partly_covered_group_stays_and_is_noted(root: Path):
    shutil.rmtree(root / "carpet" / "test" / "hole")
    check = check_layout(root, "carpet")
    assert "cut" in check.present_groups and check.missing_groups == {}
    assert any("'cut' has no images of hole" in note for note in check.notes)


def test_no_training_images_is_a_problem_naming_the_folder(root: Path):
    train = root / "carpet" / "train" / "good"
    _empty(train)
    check = check_layout(root, "carpet")
    assert not check.ok and check.problems == (f"no training images in {train}",)
    with pytest.raises(ValueError, match=f"'carpet' cannot be run: no training images in {train}"):
        check.raise_for_problems()
    shutil.rmtree(root / "carpet" / "train")
    assert check_layout(root, "carpet").problems == (f"folder not found: {train} (expected MVTec AD layout)",)


def test_only_good_test_images_is_a_problem_and_no_group_is_present(root: Path):
    test = root / "carpet" / "test"
    for folder in test.iterdir():
        if folder.name != "good":
            shutil.rmtree(folder)
    check = check_layout(root, "carpet")
    assert check.problems == (f"only good test images in {test}: no defect folder holds a PNG",)
    assert check.present_groups == () and set(check.missing_groups) == set(anomaly_groups("carpet"))


def test_empty_test_split_and_missing_good_images_are_problems(root: Path):
    test = root / "carpet" / "test"
    _empty(test / "good")
    assert check_layout(root, "carpet").problems == (f"no good test images in {test / 'good'}",)
    for folder in test.iterdir():
        _empty(folder)
    assert check_layout(root, "carpet").problems == (f"no test images in {test}",)
    shutil.rmtree(test)
    assert f"folder not found: {test}" in check_layout(root, "carpet").problems[0]


def test_missing_masks_unexpected_folders_and_missing_class_are_named(root: Path):
    mask = root / "carpet" / "ground_truth" / "cut" / "000_mask.png"
    mask.unlink()
    (root / "carpet" / "test" / "stain").mkdir()
    problems = check_layout(root, "carpet").problems
    assert problems[0].startswith(f"unexpected test folder {root / 'carpet' / 'test' / 'stain'}")
    assert problems[1] == f"1 defect images without a mask: expected {mask}"
    nowhere = root / "nowhere"
    assert check_layout(nowhere, "carpet").problems == (f"class folder not found: {nowhere / 'carpet'}",)
    with pytest.raises(ValueError, match="'rug'"):
        check_layout(root, "rug")
