"""Run one unit of the protocol: a class, a detector, every Table 1 group added in turn.

The detector's maps and the ND module's features are computed once per test image; each group then
costs one text encoding and a cheap suppression map (:func:`nandlib.nand.suppression_maps`). Results go
to ``<output_dir>/results/<detector>/<class>.csv`` (written atomically: its presence marks the unit
finished), Fig. 5 examples to ``….examples.npz``, provenance to ``….json`` and the diagnostics of
:mod:`nandlib.diagnostics` to ``<output_dir>/diagnostics/<detector>/<class>.csv``. Book: ``protocol.md``
and ``reproducing.md``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from nandlib import __version__
from nandlib.backbones import load_clip
from nandlib.cache import FeatureCache, cache_from_setting
from nandlib.data import anomaly_groups, read_class
from nandlib.data.mvtec import Sample
from nandlib.detectors.aprilgan import AprilGAN
from nandlib.detectors.base import Detector
from nandlib.diagnostics import defect_pixels, group_diagnostics
from nandlib.geometry import EVAL_SIZE, crop_image, crop_to_region, regions_for, to_eval_grid
from nandlib.nand import NormalityDetector, final_map, predict_with_features, suppression_maps
from nandlib.protocol import class_results

DETECTORS = ("aprilgan", "winclip", "patchcore")
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class UnitConfig:
    """Everything one unit needs; the run notebook's ``parameters`` cell mirrors these fields.

    Attributes:
        class_name: MVTec AD class.
        detector: ``"aprilgan"``, ``"winclip"`` or ``"patchcore"``.
        shots: WinCLIP's k (0, 1, 5); ignored by the others.
        data_root: Dataset root in MVTec AD's layout.
        output_dir: Where ``results/``, examples and provenance go.
        profile_name: Name of the profile the unit belongs to (provenance).
        profile_description: What the numbers are (provenance box).
        seed: Seed of random initialisation and of few-shot reference choice.
        device: ``"cpu"`` or ``"cuda"``.
        precision: ``"fp32"``, or ``"fp16"``/``"bf16"`` autocast of the CLIP models on CUDA only.
        batch_size: Test images per forward pass.
        cache_dir: Feature cache folder (:class:`nandlib.cache.FeatureCache`): ``None`` for the default
            (``$NAND_CACHE_DIR`` or ``<repo>/cache``), ``""`` or ``"off"`` to encode every image anew.
        nd_model, nd_image_size, nd_pretrained, nd_clip_checkpoint: The ND module's (and APRIL-GAN's)
            CLIP backbone, see :func:`nandlib.backbones.load_clip`.
        adapters: APRIL-GAN linear-layer checkpoint (authors' format) or ``None`` for random layers.
        detector_model, detector_image_size, detector_pretrained, detector_clip_checkpoint: WinCLIP's
            CLIP backbone (an open_clip tag or a local checkpoint).
        detector_weights: PatchCore's WideResNet50 weights (``None``, ``"imagenet"`` or a path).
        phrases: Group → phrases overriding the shipped phrase table (students' edits).
    """

    class_name: str
    detector: str
    data_root: str
    output_dir: str
    shots: int = 0
    profile_name: str = "custom"
    profile_description: str = ""
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 8
    cache_dir: str | None = None
    nd_model: str = "ViT-L-14-336"
    nd_image_size: int | None = 518
    nd_pretrained: str | None = None
    nd_clip_checkpoint: str | None = None
    adapters: str | None = None
    detector_model: str | None = None
    detector_image_size: int | None = None
    detector_pretrained: str | None = None
    detector_clip_checkpoint: str | None = None
    detector_weights: str | None = None
    phrases: dict[str, list[str]] | None = field(default=None)

    @property
    def detector_label(self) -> str:
        """Name used in results: ``aprilgan``, ``winclip-K`` or ``patchcore``."""
        return f"winclip-{self.shots}" if self.detector == "winclip" else self.detector

    @property
    def cache(self) -> FeatureCache | None:
        """The unit's feature cache, or ``None`` when ``cache_dir`` switches it off."""
        return cache_from_setting(self.cache_dir)


def build_aprilgan(cfg: UnitConfig, cache: FeatureCache | None = None) -> AprilGAN:
    """APRIL-GAN on the ND backbone: the zero-shot detector and the source of the ND module."""
    backbone = load_clip(
        cfg.nd_model,
        pretrained=cfg.nd_pretrained,
        checkpoint=cfg.nd_clip_checkpoint,
        image_size=cfg.nd_image_size,
        device=cfg.device,
        seed=cfg.seed,
        precision=cfg.precision,
    )
    return AprilGAN(
        backbone, cfg.class_name, adapters=cfg.adapters, seed=cfg.seed, batch_size=cfg.batch_size, cache=cache
    )


def build_detector(cfg: UnitConfig, aprilgan: AprilGAN, cache: FeatureCache | None = None) -> Detector:
    """The detector NAND wraps in this unit (APRIL-GAN reuses the ND module's own model).

    Raises:
        ValueError: Unknown detector name.
    """
    if cfg.detector == "aprilgan":
        return aprilgan
    if cfg.detector == "winclip":
        from nandlib.detectors.winclip import WinCLIP

        backbone = load_clip(
            cfg.detector_model or "ViT-B-16-plus-240",
            pretrained=cfg.detector_pretrained,
            checkpoint=cfg.detector_clip_checkpoint,
            image_size=cfg.detector_image_size,
            device=cfg.device,
            seed=cfg.seed,
            precision=cfg.precision,
        )
        return WinCLIP(
            backbone, cfg.class_name, k_shot=cfg.shots, seed=cfg.seed, batch_size=cfg.batch_size, cache=cache
        )
    if cfg.detector == "patchcore":
        from nandlib.detectors.patchcore import PatchCore

        return PatchCore(
            weights=cfg.detector_weights,
            seed=cfg.seed,
            device=cfg.device,
            batch_size=cfg.batch_size,
            cache=cache,
        )
    raise ValueError(f"detector: expected one of {DETECTORS}, got {cfg.detector!r}")


def _batches(samples: Sequence[Sample], size: int) -> Iterator[Sequence[Sample]]:
    for start in range(0, len(samples), size):
        yield samples[start : start + size]


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(
    cfg: UnitConfig, weights: dict[str, str], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Where a unit's numbers come from: profile, weights, data, code version, date, machine."""
    readme = Path(cfg.data_root) / "README.txt"
    dataset = f"MVTec AD layout at {cfg.data_root}"
    if readme.is_file():  # generated data says so in its first lines
        dataset = " ".join(line for line in readme.read_text().splitlines()[:3] if line.strip())
    device = torch.cuda.get_device_name() if cfg.device.startswith("cuda") else platform.processor() or "cpu"
    return {
        "profile": cfg.profile_name,
        "description": cfg.profile_description,
        "dataset": dataset,
        "weights": weights,
        "nandlib": __version__,
        "commit": _commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} ({device}, {os.cpu_count()} CPUs, torch {torch.__version__})",
        "config": asdict(cfg),
        **(extra or {}),
    }


def _pick_examples(anomaly_types: Sequence[str], groups: dict[str, list[str]]) -> dict[str, int]:
    """For Fig. 5: the first test image of each group."""
    return {
        g: next(i for i, t in enumerate(anomaly_types) if t in types)
        for g, types in groups.items()
        if any(t in types for t in anomaly_types)
    }


def run_unit(cfg: UnitConfig, progress: bool = True) -> pd.DataFrame:
    """Run every Table 1 group of a class for one detector; write results, examples and provenance.

    Returns:
        The class's tidy results frame (:data:`nandlib.protocol.RESULT_COLUMNS`).
    """
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    data = read_class(cfg.data_root, cfg.class_name)
    groups = anomaly_groups(cfg.class_name)
    cache = cfg.cache
    aprilgan = build_aprilgan(cfg, cache)
    nd = NormalityDetector(aprilgan)
    detector = build_detector(cfg, aprilgan, cache)
    if detector is not aprilgan:
        detector.fit([s.image() for s in data.train])
    normalities = {g: (cfg.phrases or {}).get(g, g) for g in groups}

    test = data.test
    before_maps, masks, after_maps = [], [], {g: [] for g in groups}
    defect_suppression: dict[str, list[np.ndarray]] = {g: [] for g in groups}
    images_256 = []
    batches = _batches(test, cfg.batch_size)
    for batch in tqdm(
        batches,
        total=-(-len(test) // cfg.batch_size),
        desc=f"{cfg.detector_label}/{cfg.class_name}",
        disable=not progress,
    ):
        images = [s.image() for s in batch]
        base, features = predict_with_features(detector, nd, images)
        regions = regions_for(detector.geometry, [im.size for im in images])
        base_eval = to_eval_grid(base.maps)
        before_maps.append(base_eval)
        full_masks = [torch.from_numpy(s.mask()).float() for s in batch]
        batch_masks = torch.cat(
            [crop_to_region(m[None], r, mode="nearest") for m, r in zip(full_masks, regions, strict=True)]
        ).bool()
        masks.append(batch_masks)
        images_256.extend(crop_image(im, r) for im, r in zip(images, regions, strict=True))
        for group, suppression in suppression_maps(nd, features, detector.geometry, normalities).items():
            after_maps[group].append(final_map(base_eval, [suppression]))
            defect_suppression[group].append(suppression[batch_masks].numpy())

    before = torch.cat(before_maps).numpy()
    after = {g: torch.cat(v).numpy() for g, v in after_maps.items()}
    truth = torch.cat(masks).numpy()
    anomaly_types = [s.anomaly_type for s in test]
    before_scores = before.max(axis=(1, 2))
    after_scores = {g: m.max(axis=(1, 2)) for g, m in after.items()}
    frame = class_results(
        cfg.class_name,
        cfg.detector_label,
        anomaly_types,
        before_scores=before_scores,
        after_scores=after_scores,
        masks=truth,
        before_maps=before,
        after_maps=after,
    )
    diagnostics = group_diagnostics(
        cfg.class_name,
        cfg.detector_label,
        anomaly_types,
        before_scores,
        after_scores,
        pixel_types=defect_pixels(truth, anomaly_types),
        defect_suppression={g: np.concatenate(v) for g, v in defect_suppression.items()},
    )
    _write_outputs(
        cfg,
        frame,
        diagnostics,
        anomaly_types,
        groups,
        images_256,
        truth,
        before,
        after,
        weights=_weights(aprilgan, detector),
        extra={
            "seconds": round(time.perf_counter() - started, 1),
            "feature_cache": cache and f"{cache.root}: {cache.hits} hits, {cache.misses} misses",
            "reference_indices": getattr(detector, "reference_indices_", None),
        },
    )
    return frame


def _weights(aprilgan: AprilGAN, detector: Detector) -> dict[str, str]:
    weights = {
        "nd_clip": f"{aprilgan.backbone.model_name} ({aprilgan.backbone.weights})",
        "nd_adapters": aprilgan.adapters.weights,
    }
    if hasattr(detector, "backbone_weights"):  # PatchCore
        weights["detector"] = f"{detector.backbone_name} ({detector.backbone_weights})"
    elif detector is not aprilgan:  # WinCLIP
        weights["detector"] = f"{detector.backbone.model_name} ({detector.backbone.weights})"
    return weights


def unit_paths(output_dir: str | Path, detector_label: str, class_name: str) -> dict[str, Path]:
    """Files a unit writes: ``results`` (csv, marks completion), ``examples`` (npz), ``provenance`` (json),
    ``diagnostics`` (csv, :mod:`nandlib.diagnostics`)."""
    stem = Path(output_dir) / "results" / detector_label / class_name
    return {
        "results": stem.with_suffix(".csv"),
        "diagnostics": Path(output_dir) / "diagnostics" / detector_label / f"{class_name}.csv",
        "examples": stem.with_suffix(".examples.npz"),
        "provenance": stem.with_suffix(".json"),
    }


def _write_outputs(
    cfg, frame, diagnostics, anomaly_types, groups, images, truth, before, after, weights, extra
) -> None:
    paths = unit_paths(cfg.output_dir, cfg.detector_label, cfg.class_name)
    _atomic_write(paths["diagnostics"], lambda p: diagnostics.to_csv(p, index=False))
    picks = _pick_examples(anomaly_types, groups)
    arrays = {"groups": np.array(list(picks)), "types": np.array([anomaly_types[i] for i in picks.values()])}
    index = list(picks.values())
    arrays["images"] = (
        np.stack([images[i] for i in index]) if index else np.zeros((0, EVAL_SIZE, EVAL_SIZE, 3))
    )
    arrays["masks"] = truth[index]
    arrays["before"] = before[index].astype(np.float16)
    arrays["after"] = (
        np.stack([after[g][i] for g, i in picks.items()]).astype(np.float16) if index else before[:0]
    )
    _atomic_write(paths["examples"], lambda p: np.savez_compressed(p.open("wb"), **arrays))
    info = provenance(cfg, weights, extra)
    _atomic_write(paths["provenance"], lambda p: p.write_text(json.dumps(info, indent=1, default=str)))
    _atomic_write(paths["results"], lambda p: frame.to_csv(p, index=False))  # last: marks the unit done
