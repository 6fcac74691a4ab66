"""MVTec AD's classes and counts, and the paper's anomaly groups (Table 1)."""

import csv
from importlib import resources

import pytest

from nandlib.data import ANOMALY_TYPES, MVTEC_CLASSES, MVTEC_COUNTS, anomaly_groups, grouped_classes


def _table1_rows() -> list[dict[str, str]]:
    with resources.files("nandlib.paper").joinpath("table1_groups.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_classes_are_mvtec_ad_sorted():
    assert len(MVTEC_CLASSES) == 15 and list(MVTEC_CLASSES) == sorted(MVTEC_CLASSES)
    assert {"bottle", "grid", "toothbrush", "zipper", "metal_nut"} <= set(MVTEC_CLASSES)


def test_counts_total_mvtec_ad():
    # MVTec AD: 3629 training and 1725 test images; 73 anomaly types including 4 "combined".
    assert sum(train for train, _ in MVTEC_COUNTS.values()) == 3629
    assert sum(sum(test.values()) for _, test in MVTEC_COUNTS.values()) == 1725
    assert sum(len(types) for types in ANOMALY_TYPES.values()) == 73
    assert [c for c in MVTEC_CLASSES if "combined" in ANOMALY_TYPES[c]] == ["cable", "pill", "wood", "zipper"]
    assert ANOMALY_TYPES["toothbrush"] == ("defective",)
    assert MVTEC_COUNTS["bottle"] == (
        209,
        {"good": 20, "broken_large": 20, "broken_small": 22, "contamination": 21},
    )


def test_groups_equal_table1_csv():
    expected: dict[str, dict[str, list[str]]] = {}
    for row in _table1_rows():
        expected.setdefault(row["class"], {}).setdefault(row["group"], []).append(row["anomaly_type"])
    got = {c: anomaly_groups(c) for c in grouped_classes()}
    assert got == expected
    assert len(got) == 14 and sum(len(groups) for groups in got.values()) == 56
    assert list(anomaly_groups("carpet")) == ["thread", "metal", "color", "cut"]
    assert anomaly_groups("carpet")["cut"] == ["cut", "hole"]


def test_groups_partition_each_class_types_without_combined():
    for class_name in grouped_classes():
        members = [t for types in anomaly_groups(class_name).values() for t in types]
        assert sorted(members) == sorted(t for t in ANOMALY_TYPES[class_name] if t != "combined"), class_name
        assert "combined" not in anomaly_groups(class_name)


def test_toothbrush_and_unknown_classes_have_no_groups():
    assert "toothbrush" not in grouped_classes()
    with pytest.raises(ValueError, match="toothbrush"):
        anomaly_groups("toothbrush")
    with pytest.raises(ValueError, match="'carpets'"):
        anomaly_groups("carpets")


def test_groups_are_copies():
    anomaly_groups("bottle")["broken"].append("x")
    assert anomaly_groups("bottle")["broken"] == ["broken_small", "broken_large"]
