"""MVTec AD's classes, anomaly types and image counts, and the paper's anomaly groups (Table 1).

Book: ``protocol.md``, "Anomaly groups". The counts are MVTec AD's (Bergmann et al., CVPR 2019): 3629
training and 1725 test images over 15 classes. They size the synthetic stand-in at ``scale="paper"``.
"""

from __future__ import annotations

from functools import cache

from nandlib.paper import read_paper_table

TEXTURE_CLASSES = ("carpet", "grid", "leather", "tile", "wood")
GRAYSCALE_CLASSES = ("grid", "screw", "zipper")
COMBINED = "combined"
GOOD = "good"

# class -> (train/good images, {test folder: images}); test folders are MVTec AD's anomaly types plus "good".
MVTEC_COUNTS: dict[str, tuple[int, dict[str, int]]] = {
    "bottle": (209, {"good": 20, "broken_large": 20, "broken_small": 22, "contamination": 21}),
    "cable": (224, {"good": 58, "bent_wire": 13, "cable_swap": 12, "combined": 11,
                    "cut_inner_insulation": 14, "cut_outer_insulation": 10, "missing_cable": 12,
                    "missing_wire": 10, "poke_insulation": 10}),
    "capsule": (219, {"good": 23, "crack": 23, "faulty_imprint": 22, "poke": 21, "scratch": 23,
                      "squeeze": 20}),
    "carpet": (280, {"good": 28, "color": 19, "cut": 17, "hole": 17, "metal_contamination": 17,
                     "thread": 19}),
    "grid": (264, {"good": 21, "bent": 12, "broken": 12, "glue": 11, "metal_contamination": 11,
                   "thread": 11}),
    "hazelnut": (391, {"good": 40, "crack": 18, "cut": 17, "hole": 18, "print": 17}),
    "leather": (245, {"good": 32, "color": 19, "cut": 19, "fold": 17, "glue": 19, "poke": 18}),
    "metal_nut": (220, {"good": 22, "bent": 25, "color": 22, "flip": 23, "scratch": 23}),
    "pill": (267, {"good": 26, "color": 25, "combined": 17, "contamination": 21, "crack": 26,
                   "faulty_imprint": 19, "pill_type": 9, "scratch": 24}),
    "screw": (320, {"good": 41, "manipulated_front": 24, "scratch_head": 24, "scratch_neck": 25,
                    "thread_side": 23, "thread_top": 23}),
    "tile": (230, {"good": 33, "crack": 17, "glue_strip": 18, "gray_stroke": 16, "oil": 18, "rough": 15}),
    "toothbrush": (60, {"good": 12, "defective": 30}),
    "transistor": (213, {"good": 60, "bent_lead": 10, "cut_lead": 10, "damaged_case": 10, "misplaced": 10}),
    "wood": (247, {"good": 19, "color": 8, "combined": 11, "hole": 10, "liquid": 10, "scratch": 21}),
    "zipper": (240, {"good": 32, "broken_teeth": 19, "combined": 16, "fabric_border": 17,
                     "fabric_interior": 16, "rough": 17, "split_teeth": 18, "squeezed_teeth": 16}),
}

MVTEC_CLASSES: tuple[str, ...] = tuple(sorted(MVTEC_COUNTS))
ANOMALY_TYPES: dict[str, tuple[str, ...]] = {
    name: tuple(sorted(t for t in test if t != GOOD)) for name, (_, test) in MVTEC_COUNTS.items()
}


def check_class(class_name: str) -> str:
    """Return ``class_name`` if it is an MVTec AD class, else raise ``ValueError`` naming it."""
    if class_name not in MVTEC_COUNTS:
        raise ValueError(f"unknown MVTec AD class {class_name!r}; expected one of {', '.join(MVTEC_CLASSES)}")
    return class_name


@cache
def _table1() -> dict[str, dict[str, tuple[str, ...]]]:
    groups: dict[str, dict[str, list[str]]] = {}
    for row in read_paper_table("table1_groups").itertuples(index=False):
        groups.setdefault(row[0], {}).setdefault(row[1], []).append(row[2])
    return {c: {g: tuple(types) for g, types in by_group.items()} for c, by_group in groups.items()}


def anomaly_groups(class_name: str) -> dict[str, list[str]]:
    """The paper's anomaly groups of one class (Table 1): the units of normality addition.

    Each group is added as normal in turn (book: ``protocol.md``, "Relabelling"). ``combined`` is never a
    group, and ``toothbrush`` has none (it has a single anomaly type, so the paper excludes it).

    Args:
        class_name: An MVTec AD class other than ``toothbrush``.

    Returns:
        Group name -> its MVTec AD anomaly types, both in Table 1's order.
    """
    check_class(class_name)
    table = _table1()
    if class_name not in table:
        raise ValueError(
            f"class {class_name!r} has no anomaly groups: the paper excludes it (one anomaly type)"
        )
    return {group: list(types) for group, types in table[class_name].items()}


def grouped_classes() -> tuple[str, ...]:
    """The 14 classes that have anomaly groups (all but ``toothbrush``), sorted."""
    return tuple(sorted(_table1()))
