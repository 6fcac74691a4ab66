"""Relabelling, AUROCs (checked against brute-force pair counts) and the tidy results frame."""

import numpy as np
import pytest

from nandlib.protocol import RESULT_COLUMNS, class_results, group_masks, image_auroc, pixel_auroc, relabel


def _pairs_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Share of (normal, anomalous) pairs ordered correctly; ties count one half."""
    normal, anomalous = scores[labels == 0], scores[labels == 1]
    diff = anomalous[:, None] - normal[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def test_relabel_hand_made_types():
    types = ["good", "cut", "hole", "color", "combined", "good", "thread"]
    labels, keep = relabel(types, ["cut", "hole"])
    assert labels.tolist() == [0, 0, 0, 1, 1, 0, 1] and keep.all()
    labels, keep = relabel(types, ["cut", "hole"], combined="drop")
    assert labels[keep].tolist() == [0, 0, 0, 1, 0, 1] and keep.tolist() == [1, 1, 1, 1, 0, 1, 1]


@pytest.mark.parametrize(
    ("added", "combined", "named"),
    [
        (["cut"], "ignore", "combined"),
        (["good"], "anomalous", "added_types"),
        (["combined"], "anomalous", "added_types"),
        (["scratch"], "anomalous", "scratch"),
        ([], "anomalous", "added"),
    ],
)
def test_relabel_bad_input(added: list[str], combined: str, named: str):
    with pytest.raises(ValueError, match=named):
        relabel(["good", "cut", "combined"], added, combined=combined)


@pytest.mark.parametrize("seed", range(5))
def test_image_auroc_equals_pair_count_with_ties(seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    labels[:2] = [0, 1]
    scores = rng.integers(0, 5, 40).astype(float)  # many ties
    assert image_auroc(labels, scores) == pytest.approx(_pairs_auroc(labels, scores), abs=1e-12)


def test_image_auroc_single_class_and_bad_input_are_named():
    with pytest.raises(ValueError, match="carpet/cut.*4 normal, 0 anomalous"):
        image_auroc([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], name="carpet/cut")
    with pytest.raises(ValueError, match="differ in length"):
        image_auroc([0, 1], [0.5])
    with pytest.raises(ValueError, match="NaN"):
        image_auroc([0, 1], [0.5, np.nan])
    with pytest.raises(ValueError, match="labels must be 0"):
        image_auroc([0, 2], [0.5, 0.6])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_pixel_auroc_equals_pair_count_with_ties(dtype: type):
    rng = np.random.default_rng(3)
    masks = rng.random((3, 4, 5)) < 0.3
    maps = rng.integers(0, 4, (3, 4, 5)).astype(dtype)
    expected = _pairs_auroc(masks.ravel().astype(int), maps.ravel().astype(float))
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)
    assert pixel_auroc(masks, maps) == pytest.approx(image_auroc(masks.ravel(), maps.ravel()), abs=1e-12)


def test_pixel_auroc_bad_input_is_named():
    with pytest.raises(ValueError, match="pill/color"):
        pixel_auroc(np.zeros((2, 3, 3), bool), np.ones((2, 3, 3)), name="pill/color")
    with pytest.raises(ValueError, match=r"masks \(2, 3, 3\) and maps \(2, 3, 4\)"):
        pixel_auroc(np.zeros((2, 3, 3), bool), np.ones((2, 3, 4)))


def test_group_masks_clears_only_the_added_group():
    masks = np.ones((4, 2, 2), dtype=bool)
    out = group_masks(masks, ["good", "cut", "hole", "color"], ["cut", "hole"])
    assert out.any(axis=(1, 2)).tolist() == [True, False, False, True]
    assert masks.all()  # input untouched


# carpet groups (Table 1): thread, metal, color, cut = {cut, hole}
TYPES = ["good", "good", "cut", "hole", "color", "thread", "metal_contamination"]
BEFORE = np.array([0.1, 0.2, 0.9, 0.8, 0.7, 0.6, 0.5])


def test_class_results_known_values_and_columns():
    after = {"cut": np.array([0.1, 0.2, 0.15, 0.05, 0.7, 0.6, 0.5]), "thread": BEFORE.copy()}
    frame = class_results("carpet", "aprilgan", TYPES, BEFORE, after)
    assert tuple(frame.columns) == RESULT_COLUMNS
    assert frame["group"].tolist() == ["thread", "cut"]  # Table 1 order
    cut = frame.set_index("group").loc["cut"]
    # "cut" added: normal = good, good, cut, hole; before, the 3 anomalies beat only the 2 good images
    assert cut["auroc_before"] == pytest.approx(6 / 12) and cut["auroc_after"] == 1.0
    assert (cut["n_normal"], cut["n_anomalous"]) == (4, 3)
    thread = frame.set_index("group").loc["thread"]
    thread_labels = np.array([0, 0, 1, 1, 1, 0, 1])  # good and thread normal
    assert (
        thread["auroc_before"] == thread["auroc_after"] == pytest.approx(_pairs_auroc(thread_labels, BEFORE))
    )
    assert frame[["pauroc_before", "pauroc_after"]].isna().all().all()


def test_class_results_pixel_columns_use_group_masks():
    rng = np.random.default_rng(0)
    masks = np.zeros((7, 4, 4), dtype=bool)
    masks[2:, 1:3, 1:3] = True
    before_maps = rng.random((7, 4, 4)).astype(np.float16)
    after_maps = {"cut": rng.random((7, 4, 4)).astype(np.float32)}
    frame = class_results(
        "carpet",
        "aprilgan",
        TYPES,
        BEFORE,
        {"cut": BEFORE},
        masks=masks,
        before_maps=before_maps,
        after_maps=after_maps,
    )
    truth = group_masks(masks, TYPES, ["cut", "hole"])
    assert frame.loc[0, "pauroc_before"] == pytest.approx(pixel_auroc(truth, before_maps))
    assert frame.loc[0, "pauroc_after"] == pytest.approx(pixel_auroc(truth, after_maps["cut"]))
    assert frame.loc[0, "pauroc_before"] != pytest.approx(pixel_auroc(masks, before_maps))
    with pytest.raises(ValueError, match="after_maps"):
        class_results(
            "carpet", "aprilgan", TYPES, BEFORE, {"cut": BEFORE}, masks=masks, before_maps=before_maps
        )


def test_class_results_combined_policy():
    types = ["good", "scratch", "liquid", "color", "hole", "combined"]
    scores = np.array([0.0, 0.5, 0.6, 0.7, 0.8, 0.9])
    kept = class_results("wood", "x", types, scores, {"hole": scores})
    dropped = class_results("wood", "x", types, scores, {"hole": scores}, combined="drop")
    assert kept.loc[0, "n_anomalous"] == 4 and dropped.loc[0, "n_anomalous"] == 3
    # "hole" added: normal scores 0.0 and 0.8; only the combined image (0.9) beats 0.8
    assert kept.loc[0, "auroc_before"] == pytest.approx(5 / 8)
    assert dropped.loc[0, "auroc_before"] == pytest.approx(3 / 6)


def test_class_results_bad_input_is_named():
    with pytest.raises(ValueError, match="'carpet' has no anomaly group.*'scratch'"):
        class_results("carpet", "aprilgan", TYPES, BEFORE, {"scratch": BEFORE})
    with pytest.raises(ValueError, match=r"after_scores\['cut'\]"):
        class_results("carpet", "aprilgan", TYPES, BEFORE, {"cut": BEFORE[:3]})
    only_group = ["good", "cut", "hole"]
    with pytest.raises(ValueError, match="carpet/cut"):
        class_results("carpet", "aprilgan", only_group, BEFORE[:3], {"cut": BEFORE[:3]})
