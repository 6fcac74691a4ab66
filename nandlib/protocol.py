"""The evaluation protocol: relabel one anomaly group as normal, compare AUROC before and after NAND.

Book: ``protocol.md``, "Relabelling" and "Metrics". For a class and one of its anomaly groups ``g``
(Table 1, :func:`nandlib.data.anomaly_groups`), the test images of ``good`` and of ``g``'s types become
normal (label 0) and all other defect images stay anomalous (label 1). The *before* AUROC scores the original
detector against these labels; the *after* AUROC scores the NAND-wrapped detector (Eq. 5, Eq. 6) that was
told ``g`` is normal. Pixel AUROC is our addition (the paper reports none): the masks of ``g``'s images become
all-normal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from nandlib.data.classes import COMBINED, GOOD, anomaly_groups

COMBINED_POLICIES = ("anomalous", "drop")
RESULT_COLUMNS = (
    "class", "group", "detector", "auroc_before", "auroc_after", "n_normal", "n_anomalous",
    "pauroc_before", "pauroc_after",
)


def relabel(
    anomaly_types: Sequence[str], added_types: Sequence[str], combined: str = "anomalous"
) -> tuple[np.ndarray, np.ndarray]:
    """Labels of test images once the types ``added_types`` are added as normality.

    ``good`` and ``added_types`` → 0 (normal), every other type → 1 (anomalous). Images of type
    ``combined`` (several defects at once) stay anomalous by default, as in the paper's protocol; with
    ``combined="drop"`` they are left out (``keep`` is ``False`` for them).

    Args:
        anomaly_types: Anomaly type (test folder) of each test image, ``good`` included.
        added_types: The types of the group added as normal (e.g. ``anomaly_groups("carpet")["cut"]``).
        combined: ``"anomalous"`` (keep ``combined`` images as anomalies) or ``"drop"``.

    Returns:
        ``(labels, keep)``: int labels ``[N]`` (0 normal, 1 anomalous) and a boolean ``[N]`` of the images
        to evaluate; use ``labels[keep]``.
    """
    if combined not in COMBINED_POLICIES:
        raise ValueError(f"combined must be one of {COMBINED_POLICIES}, got {combined!r}")
    types = np.asarray(anomaly_types, dtype=object)
    added = set(added_types)
    if not added or added & {GOOD, COMBINED}:
        raise ValueError(f"added_types must be defect types (not good/combined), got {sorted(added)}")
    missing = added - set(types.tolist())
    if missing:
        raise ValueError(f"added_types {sorted(missing)} do not occur in anomaly_types")
    normal = np.isin(types, [GOOD, *added])
    keep = ~np.isin(types, [COMBINED]) if combined == "drop" else np.ones(len(types), dtype=bool)
    return (~normal).astype(np.int64), keep


def _require_both(n_normal: int, n_anomalous: int, name: str | None) -> None:
    if n_normal == 0 or n_anomalous == 0:
        where = f" for {name}" if name else ""
        raise ValueError(
            f"AUROC is undefined{where}: only one class present after relabelling "
            f"({n_normal} normal, {n_anomalous} anomalous)"
        )


def image_auroc(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, name: str | None = None
) -> float:
    """Image-level AUROC (scikit-learn), as a fraction in [0, 1].

    Args:
        labels: 0 (normal) / 1 (anomalous) per image.
        scores: Anomaly score per image (higher = more anomalous).
        name: What is evaluated (e.g. ``"carpet/cut"``), named in errors.
    """
    labels, scores = np.asarray(labels).ravel(), np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels ({labels.size}) and scores ({scores.size}) differ in length")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores{' for ' + name if name else ''} contain NaN or infinite values")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 (normal) or 1 (anomalous), got {np.unique(labels).tolist()}")
    _require_both(int((labels == 0).sum()), int((labels == 1).sum()), name)
    return float(roc_auc_score(labels, scores))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray, name: str | None = None) -> float:
    """Pixel-level AUROC over all pixels of all images, as a fraction in [0, 1].

    Exactly the image AUROC's definition (correctly ordered (normal, anomalous) pixel pairs, ties count ½),
    computed by sorting the normal pixels once and binary-searching the anomalous ones: about one copy of
    the maps in memory instead of scikit-learn's several float64 copies.

    Args:
        masks: Boolean ground truth ``[N, H, W]`` (``True`` = anomalous pixel).
        maps: Anomaly maps ``[N, H, W]`` (float16/float32) of the same shape.
        name: What is evaluated, named in errors.
    """
    masks, maps = np.asarray(masks, dtype=bool), np.asarray(maps)
    if masks.shape != maps.shape:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} differ in shape")
    anomalous = maps[masks]
    normal = np.sort(maps[~masks])
    if not (np.isfinite(anomalous).all() and np.isfinite(normal).all()):
        raise ValueError(f"maps{' for ' + name if name else ''} contain NaN or infinite values")
    _require_both(normal.size, anomalous.size, name)
    below = np.searchsorted(normal, anomalous, side="left")
    up_to = np.searchsorted(normal, anomalous, side="right")
    ordered = below.sum(dtype=np.float64) + 0.5 * (up_to - below).sum(dtype=np.float64)
    return float(ordered / (anomalous.size * normal.size))


def group_masks(masks: np.ndarray, anomaly_types: Sequence[str], added_types: Sequence[str]) -> np.ndarray:
    """Pixel ground truth once ``added_types`` are normal: those images' masks become all ``False``.

    Args:
        masks: Boolean masks ``[N, H, W]`` in the dataset's labels.
        anomaly_types: Anomaly type of each image.
        added_types: Types of the group added as normal.

    Returns:
        A new boolean array ``[N, H, W]``.
    """
    masks = np.array(masks, dtype=bool)
    if masks.shape[0] != len(anomaly_types):
        raise ValueError(f"masks has {masks.shape[0]} images but anomaly_types has {len(anomaly_types)}")
    masks[np.isin(np.asarray(anomaly_types, dtype=object), list(added_types))] = False
    return masks


def _subset(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return values if keep.all() else values[keep]


def class_results(
    class_name: str,
    detector: str,
    anomaly_types: Sequence[str],
    before_scores: np.ndarray,
    after_scores: Mapping[str, np.ndarray],
    masks: np.ndarray | None = None,
    before_maps: np.ndarray | None = None,
    after_maps: Mapping[str, np.ndarray] | None = None,
    combined: str = "anomalous",
) -> pd.DataFrame:
    """The tidy results of one class and detector: one row per anomaly group added as normality.

    Args:
        class_name: MVTec AD class (its groups come from Table 1).
        detector: Detector name (e.g. ``"aprilgan"``, ``"winclip-1"``, ``"patchcore"``).
        anomaly_types: Anomaly type of each test image ``[N]``.
        before_scores: Image scores ``[N]`` of the original detector (shared by all groups).
        after_scores: Group -> image scores ``[N]`` of the NAND-wrapped detector told that group is normal.
        masks: Boolean ground-truth masks ``[N, H, W]`` at the maps' size, or ``None``: pixel columns NaN.
        before_maps: Anomaly maps ``[N, H, W]`` of the original detector (needed with ``masks``).
        after_maps: Group -> NAND maps ``[N, H, W]`` (needed with ``masks``).
        combined: How ``combined`` images are labelled, see :func:`relabel`.

    Returns:
        Columns :data:`RESULT_COLUMNS`; AUROCs are fractions in [0, 1]; ``n_normal``/``n_anomalous``
        count the evaluated images after relabelling. Rows follow Table 1's group order.
    """
    groups = anomaly_groups(class_name)
    unknown = [g for g in after_scores if g not in groups]
    if unknown:
        raise ValueError(f"{class_name!r} has no anomaly group(s) {unknown}; its groups are {list(groups)}")
    n_images = len(anomaly_types)
    before_scores = np.asarray(before_scores)
    if before_scores.shape != (n_images,):
        raise ValueError(f"before_scores has shape {before_scores.shape}, expected ({n_images},)")
    maps_missing = before_maps is None or after_maps is None or set(after_maps) != set(after_scores)
    if masks is not None and maps_missing:
        raise ValueError("masks need before_maps and after_maps for every group in after_scores")
    rows = []
    for group in (g for g in groups if g in after_scores):
        name = f"{class_name}/{group}"
        scores = np.asarray(after_scores[group])
        if scores.shape != (n_images,):
            raise ValueError(f"after_scores[{group!r}] has shape {scores.shape}, expected ({n_images},)")
        labels, keep = relabel(anomaly_types, groups[group], combined)
        labels = labels[keep]
        row = {
            "class": class_name, "group": group, "detector": detector,
            "auroc_before": image_auroc(labels, before_scores[keep], name),
            "auroc_after": image_auroc(labels, scores[keep], name),
            "n_normal": int((labels == 0).sum()), "n_anomalous": int((labels == 1).sum()),
            "pauroc_before": np.nan, "pauroc_after": np.nan,
        }
        if masks is not None:
            truth = _subset(group_masks(masks, anomaly_types, groups[group]), keep)
            row["pauroc_before"] = pixel_auroc(truth, _subset(np.asarray(before_maps), keep), name)
            row["pauroc_after"] = pixel_auroc(truth, _subset(np.asarray(after_maps[group]), keep), name)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
