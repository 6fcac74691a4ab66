"""Helpers shared by the benchmark scripts: machine description, timing, generated data, prefilled caches."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch
from PIL import Image

from nandlib.cache import FeatureCache
from nandlib.data import generate_dataset, read_class
from nandlib.data.mvtec import MVTecClass
from nandlib.detectors.aprilgan import CACHE_NAMESPACE, AprilGAN


def machine() -> str:
    """One line: CPU model, cores, torch threads, torch version, load average, date (UTC)."""
    cpu = "cpu"
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{cpu}; {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads; "
        f"{platform.system()}; load average {load}; {date}"
    )


def timed(function: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall time (s) of ``repeat`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def synthetic_class(root: Path, class_name: str, scale: str, size: int = 128) -> MVTecClass:
    """A generated class in MVTec AD's layout (created once under ``root``)."""
    if not (root / class_name).is_dir():
        generate_dataset(root, [class_name], seed=0, scale=scale, size=size)
    return read_class(root, class_name)


def prefill_clip_cache(aprilgan: AprilGAN, images: Sequence[Image.Image], seed: int = 0) -> None:
    """Store random block outputs for ``images`` under ``aprilgan``'s cache key (to time the warm path).

    The cost of everything after the cache (adapters, maps, suppression) does not depend on the values.
    """
    backbone, layers = aprilgan.backbone, aprilgan.adapters.layers
    generator = torch.Generator().manual_seed(seed)
    tokens = 1 + backbone.grid_size[0] * backbone.grid_size[1]

    def random_features(batch: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        out = {"embedding": torch.randn(len(batch), backbone.embed_dim, generator=generator)}
        for layer in layers:
            out[f"layer{layer}"] = torch.randn(len(batch), tokens, backbone.vision_width, generator=generator)
        return out

    cache: FeatureCache = aprilgan.cache
    settings = backbone.feature_settings() | {"layers": list(layers)}
    for start in range(0, len(images), 8):
        cache.get_or_compute(CACHE_NAMESPACE, settings, images[start : start + 8], random_features)
