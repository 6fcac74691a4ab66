"""Time and peak memory of PatchCore.fit at the paper's geometry (resize 256, crop 224).

Not a test. Random WideResNet50 weights and generated images; the cost does not depend on the
weights. Prints one line per measurement. Book: ``reproducing.md``, "Speed".

    .venv/bin/python -u benchmarks/patchcore_memory.py --num-images 200 --device cpu
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from PIL import Image

from nandlib.detectors.patchcore import PatchCore


def _rss_mib() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=256, help="side of the generated images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize(
            (args.image_size, args.image_size), Image.BICUBIC
        )
        for _ in range(args.num_images)
    ]
    start = time.perf_counter()
    detector = PatchCore(device=args.device, batch_size=args.batch_size)
    print(f"backbone load: {time.perf_counter() - start:.1f} s, rss {_rss_mib():.0f} MiB")
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, images {args.num_images}")

    rss_before = _rss_mib()
    start = time.perf_counter()
    features = detector.embed(images)
    if detector.device.type == "cuda":
        torch.cuda.synchronize()
    embedded = time.perf_counter()
    detector.fit_features(features)
    if detector.device.type == "cuda":
        torch.cuda.synchronize()
    done = time.perf_counter()
    print(f"features: {tuple(features.shape)} ({features.numel() * 4 / 2**20:.0f} MiB float32)")
    print(f"memory bank: {tuple(detector.memory_bank_.shape)}")
    print(f"embed {embedded - start:.1f} s, coreset {done - embedded:.1f} s, fit total {done - start:.1f} s")
    print(f"rss before fit {rss_before:.0f} MiB, peak rss {_peak_rss_mib():.0f} MiB")
    if detector.device.type == "cuda":
        print(f"peak cuda memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")

    start = time.perf_counter()
    prediction = detector.predict(images[: args.batch_size])
    print(f"predict {len(prediction.scores)} images: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
