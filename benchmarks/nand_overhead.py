"""NAND's overhead: wall time of ``add_normality(AprilGAN, group)`` over bare APRIL-GAN for a class.

Item 1 of the benchmarks (``benchmarks/README.md``). Paper model size by default (ViT-L-14-336 at 518, random
init: cost does not depend on the weights), images of a generated class. Both sides encode each image once
(NAND shares APRIL-GAN's forward pass) and pay their text features once per class (APRIL-GAN's 420 prompts;
NAND adds f_add over 35 templates x the group's phrases). On a shared CPU, run-to-run noise exceeds NAND's
cost, so the parts are timed separately (best of ``--repeat``) and combined:

    bare = text + n (encode + APRIL-GAN maps)        nand = bare + f_add + n (Eq. 4 A_sup + Eq. 6 on 256²)

for the images measured and for the class's MVTec AD test-set size n.

    .venv/bin/python benchmarks/nand_overhead.py [--images 2] [--class carpet]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import machine, synthetic_class, timed

from nandlib.backbones import load_clip
from nandlib.data import anomaly_groups
from nandlib.data.synthetic import image_counts
from nandlib.detectors.aprilgan import AprilGAN
from nandlib.geometry import to_eval_grid
from nandlib.nand import NormalityDetector, final_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--class", dest="class_name", default="carpet")
    parser.add_argument("--model", default="ViT-L-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nand-bench-overhead")
    args = parser.parse_args()
    print(machine())
    data = synthetic_class(args.work / "data", args.class_name, scale="small")
    images = [sample.image() for sample in data.test[: args.images]]
    group = next(iter(anomaly_groups(args.class_name)))
    backbone = load_clip(args.model, image_size=args.image_size)
    aprilgan = AprilGAN(backbone, args.class_name)
    repeat = args.repeat

    text_s, _ = timed(lambda: AprilGAN(backbone, args.class_name).text_features, repeat)
    f_add_s, _ = timed(lambda: NormalityDetector(aprilgan).normality(group=group), repeat)
    nd = NormalityDetector(aprilgan)
    f_add = nd.normality(group=group).f_add
    encode_s, features = timed(lambda: aprilgan.features(images), repeat)
    maps_s, base = timed(lambda: aprilgan.predict_from_features(features), 2 * repeat)
    nd_features = nd.features_from(features)

    def nand_maps() -> None:
        base_maps = to_eval_grid(base.maps, nd.eval_size)
        maps = final_map(base_maps, [nd.suppression_map(nd_features, f_add, aprilgan.geometry)])
        maps.amax(dim=(1, 2))

    extra_s, _ = timed(nand_maps, 2 * repeat)
    count = len(images)
    print(
        f"{args.model} at {args.image_size}, {group!r}, best of {repeat}: APRIL-GAN text {text_s:.1f} s, "
        f"f_add {f_add_s:.1f} s; per image: encode {encode_s / count:.2f} s, APRIL-GAN maps "
        f"{maps_s / count:.3f} s, NAND maps {extra_s / count:.3f} s"
    )
    n_class = sum(n for (split, _), n in image_counts(args.class_name, "paper").items() if split == "test")
    for n in (count, n_class):
        bare = text_s + n * (encode_s + maps_s) / count
        nand = bare + f_add_s + n * extra_s / count
        print(f"RATIO NAND overhead ({n} images) = {nand / bare:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
