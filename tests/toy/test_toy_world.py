"""The toy world: auxiliary classes, captions, and the caption/image truth relation."""

from __future__ import annotations

import numpy as np
import pytest

from nandlib.data import read_class
from nandlib.toy.world import (
    AUX_CLASSES,
    UNCAPTIONED,
    clip_images,
    defect_phrases,
    describes,
    render,
    sample_caption,
    write_aux_dataset,
)


def test_every_aux_class_renders_its_defects_exactly_on_the_mask() -> None:
    for class_name in AUX_CLASSES:
        good, _ = render(class_name, "good", np.random.default_rng(1), 64)
        for kind in ("good", *__import__("nandlib.toy.world", fromlist=["AUX_TYPES"]).AUX_TYPES[class_name]):
            image, mask = render(class_name, kind, np.random.default_rng(1), 64)
            changed = np.any(np.asarray(image) != np.asarray(good), axis=-1)
            assert image.size == (64, 64) and mask.shape == (64, 64)
            assert (mask.any() == (kind != "good")) and not (changed & ~mask).any(), (class_name, kind)


def test_uncaptioned_pairs_only_get_generic_captions() -> None:
    rng = np.random.default_rng(0)
    class_name, kind = sorted(UNCAPTIONED)[0]
    own = set(defect_phrases(class_name, kind))
    for _ in range(50):
        caption, key = sample_caption(class_name, kind, rng)
        assert key == (class_name, "defect") and not any(p in caption for p in own)


def test_specific_captions_name_the_defect() -> None:
    rng = np.random.default_rng(0)
    keys = {sample_caption("carpet", "hole", rng)[1] for _ in range(40)}
    assert keys == {("carpet", "hole"), ("carpet", "defect")}


def test_describes_counts_every_true_caption() -> None:
    images = [("carpet", "good"), ("carpet", "hole"), ("tile", "oil")]
    captions = [
        ("carpet", "good"),
        ("carpet", "defect"),
        ("carpet", "hole"),
        ("tile", "defect"),
        ("carpet", "cut"),
    ]
    expected = [[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 0]]
    assert describes(images, captions).astype(int).tolist() == expected


def test_clip_images_are_deterministic_and_half_good() -> None:
    first = clip_images(seed=2, per_class=4, classes=["carpet", "coin"])
    second = clip_images(seed=2, per_class=4, classes=["carpet", "coin"])
    assert np.array_equal(first.images, second.images) and first.keys == second.keys
    assert sum(k[1] == "good" for k in first.keys) == 4


def test_aux_dataset_is_mvtec_layout_with_masks(tmp_path) -> None:
    from nandlib.training.adapters import read_masked_dataset

    root = write_aux_dataset(tmp_path / "aux", n_good=1, n_per_type=1, classes=["coin"])
    samples = read_masked_dataset(root)
    assert {s.anomaly_type for s in samples} == {
        "good",
        "scratch",
        "color",
        "bent",
        "contamination",
        "broken_small",
        "hole",
    }
    with pytest.raises(ValueError):  # auxiliary classes are not MVTec AD classes: kept apart from evaluation
        read_class(root, "coin")


def test_clip_images_pair_each_good_scene_with_its_defective_twin() -> None:
    data = clip_images(seed=1, per_class=4, classes=["coin"])
    for good, defect in ((0, 1), (2, 3)):
        assert data.keys[good][1] == "good" and data.keys[defect][1] != "good"
        changed = np.any(data.images[good] != data.images[defect], axis=-1)
        assert 0 < changed.sum() < changed.size // 4  # the same scene, differing only where the defect is


def test_state_captions_cover_every_state_but_uncaptioned_pairs() -> None:
    import numpy as np

    from nandlib.toy.world import UNCAPTIONED, class_types, state_captions

    keys = [key for _, key in state_captions("carpet", np.random.default_rng(0))]
    assert keys[:2] == [("carpet", "good"), ("carpet", "defect")]
    types = {kind for _, kind in keys[2:]}
    assert ("carpet", "metal_contamination") in UNCAPTIONED
    assert types == set(class_types("carpet")) - {"combined", "metal_contamination"}
    captions = [caption for caption, _ in state_captions("carpet", np.random.default_rng(0))]
    assert any("hole" in caption for caption in captions) and not any("metal" in c for c in captions)


def test_own_states_name_the_defect_or_fall_back_to_generic() -> None:
    from nandlib.toy.world import own_states

    states = [("carpet", "good"), ("carpet", "defect"), ("carpet", "hole"), ("carpet", "cut")]
    images = [("carpet", "good"), ("carpet", "hole"), ("carpet", "metal_contamination"), ("grid", "hole")]
    expected = [
        [True, False, False, False],  # good: flawless
        [False, False, True, False],  # its own type, not the generic one
        [False, True, False, False],  # never captioned: only the generic state
        [False, False, False, False],  # another class: none of these
    ]
    assert own_states(images, states).tolist() == expected
