"""Seconds per step of the toy CLIP's training: captions encoded up to the longest one vs the whole context.

The toy captions fill about a third of ``nand-toy``'s 32 text positions;
:func:`nandlib.toy.clip_training._encode_text` cuts the padding (exact: causal mask, pooled at EOT). The
baseline encodes every position (``model.encode_text``). Both sides run the same seeded steps, alternating,
in one process; the ratio of the best of ``--repeat`` runs is printed. Book: ``reproducing.md``, "Toy world".

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/toy_training_speed.py --threads 2
"""

from __future__ import annotations

import argparse
from unittest import mock

import torch
import torch.nn.functional as F
from _common import machine, timed

from nandlib.toy import clip_training
from nandlib.toy.clip_training import ClipTraining, train_clip
from nandlib.toy.world import clip_images


def _whole_context(backbone, texts):
    tokens = backbone.tokenizer(list(texts)).to(backbone.device)
    return F.normalize(backbone.model.encode_text(tokens), dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (best kept)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    data = clip_images(seed=0, per_class=96)
    config = ClipTraining(steps=args.steps)
    best = {"cut": float("inf"), "whole": float("inf")}
    for _ in range(args.repeat):
        seconds, _ = timed(lambda: train_clip(data, config))
        best["cut"] = min(best["cut"], seconds)
        with mock.patch.object(clip_training, "_encode_text", _whole_context):
            seconds, _ = timed(lambda: train_clip(data, config))
        best["whole"] = min(best["whole"], seconds)
    for name, seconds in best.items():
        print(f"{name:>5}: {seconds / args.steps:.3f} s per step ({args.steps} steps, best of {args.repeat})")
    print(f"RATIO toy CLIP training speed cut/whole = {best['whole'] / best['cut']:.2f}")


if __name__ == "__main__":
    main()
