"""Run one unit of the protocol: a class, a detector, every Table 1 group added in turn.

A unit is one :class:`nandlib.config.UnitConfig`. The detector is built through the registry
(:mod:`nandlib.detectors.registry`) and fitted on ``train/good``; the test images are encoded once
(:class:`nandlib.evaluation.ClassEvaluation`) and each group then costs one text encoding and a cheap
suppression map. The class folder is checked first (:func:`nandlib.data.check_layout`): a class that
cannot run fails before anything is encoded, a group without test images is skipped with a
:class:`LayoutWarning`. The output folders are checked writable before the work too, and temporaries a
killed earlier run of the unit left are removed, and so is a sweep's fingerprint of the unit (it would
vouch for results this run replaces). Outputs follow
:class:`nandlib.outputs.OutputLayout`: results (written last), Fig. 5 examples, provenance and
diagnostics, each written atomically. Book: ``protocol.md`` and ``reproducing.md``.
"""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pandas as pd
import torch

from nandlib import provenance
from nandlib.cache import FeatureCache, cache_from_setting
from nandlib.config import UnitConfig
from nandlib.data import check_layout, read_class
from nandlib.detectors.aprilgan import AprilGAN
from nandlib.detectors.base import Detector
from nandlib.detectors.registry import BuildContext, clip_from_spec
from nandlib.evaluation import ClassEvaluation, ClassResults, LazyImages
from nandlib.geometry import EVAL_SIZE, crop_image
from nandlib.nand import NormalityDetector
from nandlib.outputs import atomic_write, check_writable, remove_temporaries


class LayoutWarning(UserWarning):
    """Part of a class cannot be run (a Table 1 group without test images, an empty folder); the rest runs."""


def build_nd(cfg: UnitConfig, cache: FeatureCache | None = None) -> NormalityDetector:
    """The unit's ND module: APRIL-GAN on ``cfg.nd``'s CLIP and linear layers."""
    backbone = clip_from_spec(cfg.nd.clip, device=cfg.device, seed=cfg.seed, precision=cfg.precision)
    aprilgan = AprilGAN(
        backbone,
        cfg.class_name,
        adapters=cfg.nd.adapters,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        cache=cache,
    )
    return NormalityDetector(aprilgan, layer_combine=cfg.nd.layer_combine)


def build_detector(cfg: UnitConfig, nd: NormalityDetector, cache: FeatureCache | None = None) -> Detector:
    """The detector NAND wraps in this unit, built by its registry kind from its settings."""
    context = BuildContext(
        class_name=cfg.class_name,
        seed=cfg.seed,
        device=cfg.device,
        precision=cfg.precision,
        batch_size=cfg.batch_size,
        cache=cache,
        nd_aprilgan=nd.aprilgan,
    )
    return cfg.detector.detector_class.from_settings(cfg.detector.settings, context)


def run_unit(cfg: UnitConfig, progress: bool = True) -> pd.DataFrame:
    """Run every Table 1 group of a class for one detector; write results, examples and provenance.

    Returns:
        The class's tidy results frame (:data:`nandlib.protocol.RESULT_COLUMNS`).

    Raises:
        ConfigError: The unit's device is not visible here (:meth:`UnitConfig.check_device`).
        ValueError: The class folder cannot be run (every problem named), before any model is built.
        OutputError: An output folder or file cannot be written (before the work, or at the end), named.
    """
    from nandlib.toy.train import resolve_toy_weights

    started = time.perf_counter()
    cfg.check_device()
    folder = check_layout(cfg.data_root, cfg.class_name)
    folder.raise_for_problems()
    for note in folder.notes:
        warnings.warn(f"{cfg.class_name}: {note}", LayoutWarning, stacklevel=2)
    for path in (
        cfg.outputs.results(cfg.label, cfg.class_name),
        cfg.outputs.diagnostics(cfg.label, cfg.class_name),
    ):
        check_writable(path.parent)
    for path in cfg.outputs.unit_files(cfg.label, cfg.class_name):
        remove_temporaries(path)  # of a killed earlier run of this unit
    cfg.outputs.fingerprint(cfg.label, cfg.class_name).unlink(missing_ok=True)  # a sweep's, for other results
    named = cfg  # recorded as given: toy:clip, not the path the shipped files have on this machine
    cfg = resolve_toy_weights(cfg, log=print)
    torch.manual_seed(cfg.seed)
    data = read_class(cfg.data_root, cfg.class_name)
    cache = cache_from_setting(cfg.cache_dir)
    nd = build_nd(cfg, cache)
    detector = build_detector(cfg, nd, cache)
    detector.fit(LazyImages(data.train))
    evaluation = ClassEvaluation(
        detector,
        nd,
        data,
        label=cfg.label,
        batch_size=cfg.batch_size,
        progress=f"{cfg.label}/{cfg.class_name}" if progress else None,
    )
    normalities = evaluation.normalities(cfg.phrases)
    results = evaluation.results({g: n for g, n in normalities.items() if g not in folder.missing_groups})
    record = _provenance(named, nd, detector, time.perf_counter() - started, cache)
    _write_outputs(cfg, evaluation, results, record)
    return results.frame


def _provenance(
    cfg: UnitConfig, nd: NormalityDetector, detector: Detector, seconds: float, cache: FeatureCache | None
) -> dict:
    backbone = nd.aprilgan.backbone
    weights = {
        "nd_clip": f"{backbone.model_name} ({backbone.weights})",
        "nd_adapters": nd.aprilgan.adapters.weights,
    }
    fitted = {} if detector is nd.aprilgan else detector.provenance()
    if "weights" in fitted:
        weights["detector"] = fitted.pop("weights")
    return provenance.record(
        cfg.profile.name,
        cfg.profile.description,
        cfg.data_root,
        cfg.device,
        weights,
        config=cfg.model_dump(mode="json"),
        seconds=round(seconds, 1),
        feature_cache=cache and f"{cache.root}: {cache.hits} hits, {cache.misses} misses",
        **fitted,
    )


def _first_of_each_group(evaluation: ClassEvaluation) -> dict[str, int]:
    """For Fig. 5: the first test image of each group present."""
    types = evaluation.anomaly_types
    return {
        group: next(i for i, t in enumerate(types) if t in members)
        for group, members in evaluation.groups.items()
        if any(t in members for t in types)
    }


def _examples(evaluation: ClassEvaluation, results: ClassResults) -> dict[str, np.ndarray]:
    picks = _first_of_each_group(evaluation)
    index = list(picks.values())
    geometry = evaluation.detector.geometry
    images = [evaluation.data.test[i].image() for i in index]
    crops = [crop_image(image, geometry.region(*image.size)) for image in images]
    return {
        "groups": np.array(list(picks)),
        "types": np.array([evaluation.anomaly_types[i] for i in index]),
        "images": np.stack(crops) if crops else np.zeros((0, EVAL_SIZE, EVAL_SIZE, 3)),
        "masks": evaluation.masks.numpy()[index],
        "before": results.before[index].astype(np.float16),
        "after": (
            np.stack([results.after[g][i] for g, i in picks.items()]).astype(np.float16)
            if index
            else results.before[:0]
        ),
    }


def _write_outputs(cfg: UnitConfig, evaluation: ClassEvaluation, results: ClassResults, record: dict) -> None:
    layout, label, name = cfg.outputs, cfg.label, cfg.class_name
    atomic_write(layout.diagnostics(label, name), lambda p: results.diagnostics.to_csv(p, index=False))
    arrays = _examples(evaluation, results)
    atomic_write(layout.examples(label, name), lambda p: np.savez_compressed(p.open("wb"), **arrays))
    text = json.dumps(record, indent=1, default=str)
    atomic_write(layout.provenance(label, name), lambda p: p.write_text(text))
    atomic_write(layout.results(label, name), lambda p: results.frame.to_csv(p, index=False))  # last: done
