"""Evaluate one class of the toy world with the standard columns and the diagnostics of :mod:`.metrics`.

Like :func:`nandlib.run.run_unit` (one forward pass per image, every group added in turn), but it keeps each
group's suppression map ``A_sup`` to measure its specificity. Book: ``results.md``, "Toy world".
"""

from __future__ import annotations

import pandas as pd
import torch

from nandlib.data import anomaly_groups
from nandlib.data.mvtec import MVTecClass
from nandlib.detectors.base import Detector
from nandlib.geometry import crop_to_region, regions_for, to_eval_grid
from nandlib.nand import NormalityDetector, final_map, predict_with_features
from nandlib.protocol import class_results
from nandlib.toy.metrics import group_diagnostics


def evaluate_class(
    detector: Detector, nd: NormalityDetector, data: MVTecClass, label: str, batch_size: int = 32
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Standard results (:data:`nandlib.protocol.RESULT_COLUMNS`) and diagnostics of one class.

    Args:
        detector: A fitted detector (APRIL-GAN, WinCLIP, PatchCore …).
        nd: The class's ND module.
        data: The class's test split.
        label: Detector name in the frames.
        batch_size: Images per forward pass.
    """
    groups = anomaly_groups(data.name)
    before, masks, sups = [], [], {g: [] for g in groups}
    for start in range(0, len(data.test), batch_size):
        batch = data.test[start : start + batch_size]
        images = [s.image() for s in batch]
        base, features = predict_with_features(detector, nd, images)
        before.append(to_eval_grid(base.maps, nd.eval_size))
        regions = regions_for(detector.geometry, [im.size for im in images])
        masks.append(
            torch.cat(
                [
                    crop_to_region(torch.from_numpy(s.mask()).float()[None], r, nd.eval_size, mode="nearest")
                    for s, r in zip(batch, regions, strict=True)
                ]
            ).bool()
        )
        for group in groups:
            sups[group].append(nd.suppression_map(features, nd.normality(group).f_add, detector.geometry))
    before_maps = torch.cat(before)
    suppressions = {g: torch.cat(v) for g, v in sups.items()}
    after = {g: final_map(before_maps, [s]).numpy() for g, s in suppressions.items()}
    truth = torch.cat(masks).numpy()
    types = [s.anomaly_type for s in data.test]
    before_np = before_maps.numpy()
    before_scores = before_np.max(axis=(1, 2))
    after_scores = {g: m.max(axis=(1, 2)) for g, m in after.items()}
    results = class_results(
        data.name,
        label,
        types,
        before_scores,
        after_scores,
        masks=truth,
        before_maps=before_np,
        after_maps=after,
    )
    diagnostics = group_diagnostics(
        data.name,
        label,
        types,
        before_scores,
        after_scores,
        truth,
        {g: s.numpy() for g, s in suppressions.items()},
    )
    return results, diagnostics
