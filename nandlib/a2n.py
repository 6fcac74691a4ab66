"""Saito et al.'s A2N scenario ("anomaly to normal", CVPR 2026 Workshops) and its metric, S-AUROC.

Facts from their code (``ReijiSoftmaxSaito/Scenario``: ``dataset.py``, ``test.py``; book:
``examples_vs_text.md``, "A2N"):

- **Split** (:func:`a2n_split`): the added type's test images, sorted by file name; the first
  ``len // 2`` move into the training set as normal, the rest stay in the test set relabelled normal
  (``good-<type>``), and the moved ones leave the test set. For a group of several types (Table 1) we
  apply the rule to each type (our extension; theirs names one type).
- **S-AUROC** (their ``Shift_AUROC``, :func:`shift_auroc`): over the relabelled test images only, the
  *before* model's image scores labelled 1 and the *after* model's labelled 0; the ROC AUC of those two
  score sets (1: every after-score below every before-score). Image scores are the maps' maxima.
- **Retrain** (:func:`a2n_rows` with a refitted detector): the detector fitted again on train + the moved
  half, the upper bound the example route and NAND are compared with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from nandlib.data.classes import anomaly_groups
from nandlib.data.mvtec import MVTecClass, Sample
from nandlib.detectors.base import Detector
from nandlib.evaluation import LazyImages
from nandlib.protocol import image_auroc, relabel

A2N_COLUMNS = ("class", "group", "route", "auroc_before", "auroc_after", "s_auroc", "n_moved", "n_test")


@dataclass(frozen=True)
class A2NSplit:
    """One class split for A2N.

    Attributes:
        moved: The added types' first halves (by file name), now training images.
        test: The test split without them.
        relabelled: For each ``test`` image, whether it is an added-type image now labelled normal.
    """

    moved: list[Sample]
    test: list[Sample]
    relabelled: np.ndarray


def a2n_split(data: MVTecClass, added_types: Sequence[str]) -> A2NSplit:
    """Saito et al.'s split: per added type, the first ``len // 2`` test images by file name move to train.

    Raises:
        ValueError: An added type without test images in ``data``.
    """
    moved: list[Sample] = []
    for anomaly_type in added_types:
        images = sorted((s for s in data.test if s.anomaly_type == anomaly_type), key=lambda s: s.path.name)
        if not images:
            raise ValueError(f"added_types: {data.name!r} has no test images of type {anomaly_type!r}")
        moved.extend(images[: len(images) // 2])
    gone = {sample.path for sample in moved}
    test = [sample for sample in data.test if sample.path not in gone]
    relabelled = np.array([sample.anomaly_type in added_types for sample in test])
    return A2NSplit(moved=moved, test=test, relabelled=relabelled)


def shift_auroc(before: Sequence[float], after: Sequence[float]) -> float:
    """S-AUROC: ROC AUC of the before-scores (label 1) against the after-scores (label 0) of the same
    relabelled images.

    Raises:
        ValueError: Empty or different-length score sets.
    """
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if before.size == 0 or before.shape != after.shape:
        raise ValueError(
            f"scores: need equal, non-empty before/after sets, got {before.size} and {after.size}"
        )
    labels = np.r_[np.ones(before.size), np.zeros(after.size)]
    return float(roc_auc_score(labels, np.r_[before, after]))


def _scores(detector: Detector, samples: Sequence[Sample], batch: int) -> np.ndarray:
    images = LazyImages(samples)
    maxima = [
        detector.predict(images[i : i + batch]).maps.amax(dim=(1, 2)) for i in range(0, len(images), batch)
    ]
    return np.concatenate([part.numpy() for part in maxima])


def a2n_rows(
    data: MVTecClass, group: str, before: Detector, routes: Mapping[str, Detector], batch: int = 8
) -> pd.DataFrame:
    """AUROC of the relabelled A2N test set before and after each route, and each route's S-AUROC.

    Args:
        data: The class.
        group: The Table 1 group added (its types split by :func:`a2n_split`).
        before: The detector fitted on ``train/good``.
        routes: Name → the detector after the normality was added (e.g. ``"retrain"``: refitted on train +
            the moved half; ``"examples"``: the moved half added as examples; a NAND-wrapped detector).
        batch: Images per forward pass.

    Returns:
        One row per route, :data:`A2N_COLUMNS` (fractions).
    """
    members = anomaly_groups(data.name)[group]
    split = a2n_split(data, members)
    labels, _ = relabel([s.anomaly_type for s in split.test], members)
    name = f"{data.name}/{group} (A2N)"
    base = _scores(before, split.test, batch)
    rows = []
    for route, detector in routes.items():
        after = _scores(detector, split.test, batch)
        rows.append(
            {
                "class": data.name,
                "group": group,
                "route": route,
                "auroc_before": image_auroc(labels, base, name),
                "auroc_after": image_auroc(labels, after, name),
                "s_auroc": shift_auroc(base[split.relabelled], after[split.relabelled]),
                "n_moved": len(split.moved),
                "n_test": len(split.test),
            }  # fmt: skip
        )
    return pd.DataFrame(rows, columns=list(A2N_COLUMNS))
