"""Prompt-edit loop at the paper's model size: with image features cached, new phrases -> new AUROC.

Item 2 of the benchmarks (``benchmarks/README.md``). ViT-L-14-336 at 518 px (random init: the cost does not
depend on the weights) with APRIL-GAN's 4 adapters, on a generated class with MVTec AD's test-set size.
Encoding 117 test images would take ~15 minutes on a 2-core CPU, so the feature cache is prefilled with
random block outputs under the real key (``_common.prefill_clip_cache``): the playground is then built
through the real warm path (cache read, adapters, APRIL-GAN maps), and each ``try_normality`` call with
phrases costs what a user waits for: Eq. 3 text feature over 35 templates per new phrase (phrases seen
before are not re-encoded), Eq. 4 suppression maps, Eq. 6 and the AUROC. Also prints full-context vs
truncated text encoding of 140 prompts.

    .venv/bin/python benchmarks/prompt_loop.py [--class carpet] [--keep-cache]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
from _common import machine, prefill_clip_cache, synthetic_class, timed

from nandlib.backbones import load_clip
from nandlib.cache import FeatureCache
from nandlib.data import anomaly_groups
from nandlib.detectors.aprilgan import AprilGAN
from nandlib.nand import NormalityDetector
from nandlib.playground import Playground
from nandlib.prompts import normality_prompts

EDITS = [  # what a user types, one edit after the other; each adds phrases the ND module has not seen
    ["{} with a loose thread"],
    ["{} with a loose thread", "a stray thread lying on the {}"],
    ["a {} with a long thin fibre on it", "{} with a strand of yarn"],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--class", dest="class_name", default="carpet")
    parser.add_argument("--model", default="ViT-L-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nand-bench-prompt-loop")
    parser.add_argument("--keep-cache", action="store_true", help="keep the prefilled cache (GBs) for reruns")
    args = parser.parse_args()
    print(machine())
    data = synthetic_class(args.work / "data", args.class_name, scale="paper")
    group = next(iter(anomaly_groups(args.class_name)))
    build_s, backbone = timed(lambda: load_clip(args.model, image_size=args.image_size))
    print(f"{args.model} at {args.image_size}: built in {build_s:.0f} s; {len(data.test)} test images")

    aprilgan = AprilGAN(backbone, args.class_name, cache=FeatureCache(args.work / "cache"))
    prefill_clip_cache(aprilgan, [sample.image() for sample in data.test])
    size = aprilgan.cache.size()
    print(f"cache prefilled: {size / 2**30:.2f} GiB ({size / len(data.test) / 2**20:.1f} MiB per image)")

    warm_s, playground = timed(lambda: Playground(data, NormalityDetector(aprilgan)))
    print(f"playground from cache (reads, adapters, APRIL-GAN text + maps): {warm_s:.1f} s")
    seen: set[str] = set()
    for phrases in EDITS:
        new = [phrase for phrase in phrases if phrase not in seen]
        seen.update(phrases)
        loop_s, row = timed(lambda phrases=phrases: playground.try_normality(phrases, group))
        print(
            f"edit {phrases}: {len(new)} new phrase(s), {35 * len(new)} prompts encoded: {loop_s:.2f} s; "
            f"AUROC {row.auroc_before[0]} -> {row.auroc_after[0]}"
        )
        if len(new) == 1:
            one_new = loop_s
    prompts = normality_prompts(args.class_name, EDITS[-1])
    suppression_s, _ = timed(lambda: playground.suppression(EDITS[-1]))  # text cached: maps only
    text_s, _ = timed(lambda: backbone.text_feature(prompts))
    print(
        f"parts: suppression maps of {len(data.test)} images {suppression_s:.2f} s, 70 prompts {text_s:.2f} s"
    )

    prompts = (prompts * 2)[:140]
    tokens = backbone.tokenizer(prompts)
    with torch.no_grad():
        full_s, full = timed(lambda: backbone.model.encode_text(tokens))
    short_s, short = timed(lambda: backbone.encode_text(prompts))
    longest = int(tokens.argmax(-1).max()) + 1
    print(
        f"140 prompts: full context ({tokens.shape[1]} tokens) {full_s:.1f} s, up to the longest prompt "
        f"({longest} tokens) {short_s:.1f} s; max |diff| {(full - short).abs().max():.1e}"
    )
    print(f"RATIO prompt-edit loop seconds, one new phrase = {one_new:.2f} (goal <= 3 s)")
    if not args.keep_cache:
        shutil.rmtree(args.work / "cache", ignore_errors=True)


if __name__ == "__main__":
    main()
