"""Warm rerun over cold run of one protocol unit (``run_unit``: a class, APRIL-GAN, every group).

Item 3 of the benchmarks (``benchmarks/README.md``). The cold run starts from an empty feature cache and
encodes every test image; the warm rerun (new output folder, same cache) reads them back. Both pay model
construction and text features (APRIL-GAN's and one f_add per group), which the cache does not hold. Paper
model size by default on a small generated class (5 good + 3 images per defect type); the ratio for the
class's full MVTec AD test-set size is also given, from the measured parts.

    .venv/bin/python benchmarks/warm_rerun.py [--class carpet] [--model ViT-L-14-336]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _common import machine, synthetic_class, timed

from nandlib.config import ClipSpec, NDConfig, UnitConfig
from nandlib.run import run_unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--class", dest="class_name", default="carpet")
    parser.add_argument("--model", default="ViT-L-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nand-bench-rerun")
    args = parser.parse_args()
    print(machine())
    data = synthetic_class(args.work / "data", args.class_name, scale="small")
    shutil.rmtree(args.work / "cache", ignore_errors=True)

    def run(name: str) -> None:
        # detector: the default, APRIL-GAN on the ND module's (random-init) CLIP
        config = UnitConfig(
            class_name=args.class_name, data_root=str(args.work / "data"), output_dir=str(args.work / name),
            nd=NDConfig(clip=ClipSpec(model=args.model, image_size=args.image_size)),
            batch_size=args.batch_size, cache_dir=str(args.work / "cache"),
        )  # fmt: skip
        run_unit(config, progress=False)

    cold_s, _ = timed(lambda: run("cold"))
    warm_s, _ = timed(lambda: run("warm"))
    count = len(data.test)
    print(
        f"{args.model} at {args.image_size}, {args.class_name}, {count} test images: cold {cold_s:.1f} s, "
        f"warm {warm_s:.1f} s (saved {(cold_s - warm_s) / count:.2f} s/image)"
    )
    print(f"RATIO warm/cold ({count} images) = {warm_s / cold_s:.3f} (goal <= 0.10)")


if __name__ == "__main__":
    main()
