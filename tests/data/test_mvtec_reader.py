"""The lazy reader of MVTec AD's layout, on hand-made folders, synthetic data and the real sample."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nandlib.data import read_class


def _png(path: Path, size: tuple[int, int] = (8, 8), mode: str = "RGB", value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """carpet: 2 train, 1 good test, 1 'cut' test image with its mask (8x8, 2 pixels set)."""
    carpet = tmp_path / "carpet"
    for i in range(2):
        _png(carpet / "train" / "good" / f"{i:03d}.png")
    _png(carpet / "test" / "good" / "000.png", mode="L")
    _png(carpet / "test" / "cut" / "000.png")
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2, 3] = mask[5, 5] = 255
    (carpet / "ground_truth" / "cut").mkdir(parents=True)
    Image.fromarray(mask).save(carpet / "ground_truth" / "cut" / "000_mask.png")
    return tmp_path


def test_reads_samples_lazily_with_labels(tiny: Path):
    data = read_class(tiny, "carpet")
    assert [s.anomaly_type for s in data.train] == ["good", "good"]
    assert [(s.anomaly_type, s.label) for s in data.test] == [("cut", 1), ("good", 0)]
    assert data.test[1].mask_path is None and data.test[0].mask_path.name == "000_mask.png"
    assert data.anomaly_types == ["cut"]
    good = data.test[1]
    assert good.image().mode == "RGB" and good.image().size == (8, 8)  # stored as mode L
    assert good.mask().shape == (8, 8) and not good.mask().any()
    mask = data.test[0].mask()
    assert mask.dtype == bool and sorted(zip(*np.nonzero(mask), strict=True)) == [(2, 3), (5, 5)]
    assert data.test[0].mask(size=4).shape == (4, 4)
    samples = data.train + data.test
    assert len(samples) == 4 and sum(s.label for s in samples) == 1


def test_missing_root_and_class_folder_are_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_class(tmp_path / "nowhere", "carpet")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "bottle")):
        read_class(tmp_path, "bottle")


def test_unknown_class_is_named(tiny: Path):
    with pytest.raises(ValueError, match="'rug'"):
        read_class(tiny, "rug")


def test_unexpected_test_folder_is_named(tiny: Path):
    _png(tiny / "carpet" / "test" / "scratchy" / "000.png")
    with pytest.raises(ValueError, match="scratchy"):
        read_class(tiny, "carpet")


def test_missing_mask_is_named(tiny: Path):
    _png(tiny / "carpet" / "test" / "hole" / "000.png")
    with pytest.raises(FileNotFoundError, match="hole/000_mask.png"):
        read_class(tiny, "carpet")


def test_corrupt_png_fails_only_when_decoded_and_names_file(tiny: Path):
    bad = tiny / "carpet" / "train" / "good" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    data = read_class(tiny, "carpet")  # listing does not decode
    data.train[0].image()
    with pytest.raises(ValueError, match="001.png"):
        data.train[1].image()
    truncated = tiny / "carpet" / "test" / "cut" / "000.png"
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(ValueError, match="cut/000.png"):
        read_class(tiny, "carpet").test[0].image()


def test_mask_size_mismatch_names_both_files(tiny: Path):
    _png(tiny / "carpet" / "ground_truth" / "cut" / "000_mask.png", size=(6, 8), mode="L")
    with pytest.raises(ValueError, match="000_mask.png.*6x8.*test/cut/000.png.*8x8"):
        read_class(tiny, "carpet").test[0].mask()


@pytest.mark.parametrize(
    ("class_name", "n_train", "test_counts"),
    [
        ("bottle", 20, {"good": 20, "broken_large": 20, "broken_small": 22, "contamination": 21}),
        (
            "transistor",
            10,
            {"good": 10, "bent_lead": 10, "cut_lead": 10, "damaged_case": 10, "misplaced": 10},
        ),
        ("grid", 25, {"good": 3, "bent": 3, "broken": 2, "glue": 2, "metal_contamination": 2, "thread": 2}),
    ],
)
def test_real_sample_counts(mvtec_sample: Path, class_name: str, n_train: int, test_counts: dict[str, int]):
    data = read_class(mvtec_sample, class_name)
    assert len(data.train) == n_train
    assert Counter(s.anomaly_type for s in data.test) == test_counts
    assert all((s.mask_path is None) == (s.anomaly_type == "good") for s in data.test)


def test_real_sample_decodes_grayscale_and_masks(mvtec_sample: Path):
    grid = read_class(mvtec_sample, "grid")
    defect = next(s for s in grid.test if s.label == 1)
    with Image.open(defect.path) as raw:
        assert raw.mode == "L"
    image = defect.image()
    assert image.mode == "RGB" and image.size == (1024, 1024)
    mask = defect.mask()
    assert mask.shape == (1024, 1024) and 0 < mask.sum() < mask.size
    good = next(s for s in read_class(mvtec_sample, "bottle").test if s.label == 0)
    assert good.mask().shape == (900, 900) and not good.mask().any()


def test_zero_one_mask_reads_like_zero_255(tiny: Path):
    path = tiny / "carpet" / "ground_truth" / "cut" / "000_mask.png"
    as_255 = read_class(tiny, "carpet").test[0].mask()
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2, 3] = mask[5, 5] = 1  # a common export format
    Image.fromarray(mask).save(path)
    sample = read_class(tiny, "carpet").test[0]
    assert np.array_equal(sample.mask(), as_255) and as_255.sum() == 2
    assert np.array_equal(sample.mask(size=4), read_class(tiny, "carpet").test[0].mask(size=4))


@pytest.mark.parametrize("values", [(0, 128), (0, 1, 255), (0, 3, 7)])
def test_mask_with_other_values_is_refused_naming_the_file(tiny: Path, values: tuple[int, ...]):
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[0, : len(values)] = values
    Image.fromarray(mask).save(tiny / "carpet" / "ground_truth" / "cut" / "000_mask.png")
    shown = ", ".join(map(str, values))
    with pytest.raises(ValueError, match=rf"cut/000_mask.png: grey values \{{{shown}\}}; expected"):
        read_class(tiny, "carpet").test[0].mask()
