"""The synthetic stand-in: layout, counts, masks, determinism, visible defects, atomic writing."""

from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nandlib.data import ANOMALY_TYPES, MVTEC_CLASSES, generate_dataset, is_complete, read_class, synthetic
from nandlib.data.defects import DEFECT_STYLES
from nandlib.data.synthetic import image_counts, render_sample


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_reader_sees_promised_counts_and_masks(synth_root: Path):
    assert is_complete(synth_root)
    readme = (synth_root / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "seed 0" in readme
    for class_name in ("carpet", "bottle"):
        data = read_class(synth_root, class_name)
        assert len(data.train) == 10
        counts = Counter(sample.anomaly_type for sample in data.test)
        assert counts == {"good": 5, **{t: 3 for t in ANOMALY_TYPES[class_name]}}
        for sample in data.test:
            mask = sample.mask()
            assert mask.shape == (64, 64)
            assert mask.any() == (sample.label == 1), sample.path
        assert data.train[0].image().size == (64, 64)
    assert sorted(p.name for p in synth_root.iterdir() if p.is_dir()) == ["bottle", "carpet"]


def test_masks_are_binary_png(synth_root: Path):
    mask = synth_root / "bottle" / "ground_truth" / "contamination" / "000_mask.png"
    with Image.open(mask) as image:
        assert image.mode == "L"
    assert set(np.unique(_pixels(mask))) == {0, 255}


def test_same_seed_same_images_even_for_a_subset(synth_root: Path, tmp_path: Path):
    alone = generate_dataset(tmp_path / "bottle_only", ["bottle"], seed=0, size=64)
    other = generate_dataset(tmp_path / "seed1", ["bottle"], seed=1, size=64)
    for rel in (
        "bottle/train/good/003.png",
        "bottle/test/broken_small/002.png",
        "bottle/ground_truth/broken_small/002_mask.png",
    ):
        np.testing.assert_array_equal(_pixels(alone / rel), _pixels(synth_root / rel))
    assert not np.array_equal(
        _pixels(other / "bottle/train/good/003.png"), _pixels(synth_root / "bottle/train/good/003.png")
    )
    # images within one folder differ from each other
    assert not np.array_equal(
        _pixels(alone / "bottle/train/good/000.png"), _pixels(alone / "bottle/train/good/001.png")
    )


def test_paper_scale_uses_mvtec_counts():
    counts = image_counts("bottle", "paper")
    assert counts == {
        ("train", "good"): 209,
        ("test", "good"): 20,
        ("test", "broken_large"): 20,
        ("test", "broken_small"): 22,
        ("test", "contamination"): 21,
    }
    assert sum(sum(image_counts(c, "paper").values()) for c in MVTEC_CLASSES) == 3629 + 1725
    assert image_counts("cable", "small")[("test", "combined")] == 3


@pytest.mark.parametrize("class_name", MVTEC_CLASSES)
def test_every_defect_is_visible_and_exactly_masked(class_name: str):
    good, _ = render_sample(class_name, "good", np.random.default_rng(7), 64)
    assert good.mode == ("L" if class_name in ("grid", "screw", "zipper") else "RGB")
    clean = np.asarray(good, dtype=np.float32) / 255
    for anomaly_type in ANOMALY_TYPES[class_name]:
        image, mask = render_sample(class_name, anomaly_type, np.random.default_rng(7), 64)
        change = np.abs(np.asarray(image, dtype=np.float32) / 255 - clean)
        change = change if change.ndim == 2 else change.mean(axis=2)
        assert mask.any(), anomaly_type
        assert change[~mask].max() == 0, f"{anomaly_type} painted outside its mask"
        assert change[mask].mean() > 0.05, f"{anomaly_type} is barely visible"


def test_types_of_one_class_look_different():
    assert set(DEFECT_STYLES) == {t for types in ANOMALY_TYPES.values() for t in types} - {"combined"}
    for class_name, types in ANOMALY_TYPES.items():
        looks = [(DEFECT_STYLES[t].shape, DEFECT_STYLES[t].effect) for t in types if t != "combined"]
        for a, b in combinations(range(len(looks)), 2):
            assert looks[a] != looks[b], f"{class_name}: {types[a]} and {types[b]} look alike"


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"classes": ["rug"]}, "'rug'"),
        ({"scale": "huge"}, "scale"),
        ({"size": 8}, "size"),
        ({"seed": -1}, "seed"),
        ({"classes": []}, "classes"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict, named: str):
    with pytest.raises(ValueError, match=named):
        generate_dataset(tmp_path / "out", **({"classes": ["bottle"]} | kwargs))


def test_existing_output_is_not_overwritten(synth_root: Path):
    with pytest.raises(FileExistsError, match=str(synth_root)):
        generate_dataset(synth_root, ["bottle"])


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return render_sample(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "out", ["bottle"], size=32)
    assert list(tmp_path.iterdir()) == []
