"""Diagnostics beside Δ: does NAND hurt the other defects, does the added one vanish, is ``A_sup`` specific?

Book: ``results.md``, "Diagnostics". Every unit writes them (:func:`nandlib.run.run_unit`). For a class and
each group ``g`` added as normality (Eq. 5, Eq. 6):

- ``others_before`` / ``others_after``: image AUROC of ``good`` vs the *other* defects (``g``'s images left
  out), before and after NAND — NAND should leave it unchanged;
- ``g_vs_good_before`` / ``g_vs_good_after``: image AUROC of ``good`` (normal) vs ``g`` (as anomalous) — after
  NAND it should fall towards 0.5 (``g`` no longer stands out);
- ``sup_specificity``: pixel AUROC of ``A_sup`` with ``g``'s defect pixels positive and the other defects'
  pixels negative — whether the suppression map fires on ``g`` only (on the toy world's prototype it
  decided success).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from nandlib.data.classes import GOOD, anomaly_groups
from nandlib.protocol import image_auroc, pixel_auroc

DIAGNOSTIC_COLUMNS = (
    "class",
    "group",
    "detector",
    "others_before",
    "others_after",
    "g_vs_good_before",
    "g_vs_good_after",
    "sup_specificity",
)


def defect_pixels(masks: np.ndarray, anomaly_types: Sequence[str]) -> np.ndarray:
    """The anomaly type of the image of every defect pixel, in ``masks[masks]`` order.

    Args:
        masks: Boolean ground truth ``[N, H, W]``.
        anomaly_types: Type of each image ``[N]``.
    """
    counts = np.asarray(masks).reshape(len(anomaly_types), -1).sum(axis=1)
    return np.repeat(np.asarray(anomaly_types, dtype=object), counts)


def group_diagnostics(
    class_name: str,
    detector: str,
    anomaly_types: Sequence[str],
    before_scores: np.ndarray,
    after_scores: Mapping[str, np.ndarray],
    pixel_types: np.ndarray | None = None,
    defect_suppression: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """One row per group of :data:`DIAGNOSTIC_COLUMNS` (AUROCs as fractions; NaN where undefined).

    Args:
        class_name: MVTec AD class (groups from Table 1).
        detector: Detector label.
        anomaly_types: Type of each test image ``[N]``.
        before_scores: Image scores before NAND ``[N]``.
        after_scores: Group → image scores after adding that group ``[N]``.
        pixel_types: Type of the image of each defect pixel (:func:`defect_pixels`), for specificity.
        defect_suppression: Group → ``A_sup`` at those defect pixels, for specificity.
    """
    types = np.asarray(anomaly_types, dtype=object)
    groups = anomaly_groups(class_name)
    rows = []
    for group, scores in after_scores.items():
        in_group = np.isin(types, list(groups[group]))
        good = types == GOOD
        others = ~good & ~in_group
        row = {"class": class_name, "group": group, "detector": detector}
        for name, positive in (("others", others), ("g_vs_good", in_group)):
            keep = good | positive
            labels = positive[keep].astype(int)
            defined = labels.min() == 0 and labels.max() == 1
            row[f"{name}_before"] = (
                image_auroc(labels, np.asarray(before_scores)[keep]) if defined else np.nan
            )
            row[f"{name}_after"] = image_auroc(labels, np.asarray(scores)[keep]) if defined else np.nan
        row["sup_specificity"] = np.nan
        if pixel_types is not None and defect_suppression is not None:
            # only defect pixels count: g's (positive) against other defects' (negative)
            truth = np.isin(pixel_types, list(groups[group]))
            if truth.any() and not truth.all():
                row["sup_specificity"] = pixel_auroc(truth, np.asarray(defect_suppression[group]))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(DIAGNOSTIC_COLUMNS))


def summarize_seeds(
    frames: Sequence[pd.DataFrame], keys: Sequence[str] = ("class", "group", "detector")
) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each numeric column (``<name>_mean``, ``<name>_sd``)."""
    joined = pd.concat(frames, ignore_index=True)
    numeric = [c for c in joined.columns if c not in keys and pd.api.types.is_numeric_dtype(joined[c])]
    stats = joined.groupby(list(keys), sort=False)[numeric].agg(["mean", "std"])
    stats.columns = [f"{name}_{'sd' if stat == 'std' else stat}" for name, stat in stats.columns]
    return stats.reset_index()
