"""TGVIG's keyword-to-prompt generator as NAND's phrase source, on the toy world (issue 21; not a test).

For each class and each Table 1 group whose keyword has at least two WordNet candidates the toy CLIP can
read, protocol (a) of :mod:`nandlib.examples` (``--draws`` seeded draws of ``max(ks)`` examples of the
group, removed from evaluation in every route) scores NAND (Eq. 5, Eq. 6) with three phrase sources:

- ``text``: the shipped hand-written phrases (``phrases.yaml``);
- ``keywords-examples``: :class:`~nandlib.tgvig.keywords.KeywordPromptGenerator`, phrases ranked by Eq. 1
  against the ``k`` examples of the new normality;
- ``keywords-class``: the same, ranked against the class's good training images (same for every ``k``).

Eq. 1 is scored with the ND module's own CLIP (the toy CLIP of seed 0). Writes ``keyword_prompts.csv``
(one row per class, group, detector, route, k, draw, with the phrases used) and ``keyword_prompts.json``
(provenance and timings) to ``--out``. Book: ``generated_normals.md``, "In NAND's routes".

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -u benchmarks/keyword_prompts.py --threads 2 --out book/data
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import pandas as pd
import torch
from _common import machine
from examples_report import VARIANTS, build
from toy_report import evaluation_data

from nandlib.data import read_class
from nandlib.evaluation import ClassEvaluation
from nandlib.examples import ExampleProtocol
from nandlib.paths import toy_dir
from nandlib.tgvig.keywords import KeywordPromptGenerator
from nandlib.tgvig.use import keyword_phrase_route

TOP_K = 3


def class_rows(class_name: str, variant: str, data: Path, draws: int, ks: tuple[int, ...]) -> tuple:
    """The protocol's rows for one class and detector variant, and each measured group's candidate prompts
    (those of at least two words the toy CLIP reads: with one, every source of ranking gives the same)."""
    detector, nd, cfg = build(class_name, variant, data, toy_dir() / "keyword-prompts" / "cache")
    classes = read_class(data, class_name)
    evaluation = ClassEvaluation(detector, nd, classes, label=variant, batch_size=cfg.batch_size)
    clip = nd.aprilgan.backbone
    readable = KeywordPromptGenerator(clip, images=None)
    words = {g: readable.candidates(class_name, g) for g in evaluation.groups}
    groups = [g for g, prompts in words.items() if len(prompts) >= 2]
    train = [sample.image() for sample in classes.train]
    protocol = ExampleProtocol(
        evaluation, ks=ks, draws=draws, seed=cfg.seed, routes=("text",), batch_size=cfg.batch_size,
        phrase_routes={
            "keywords-examples": keyword_phrase_route(clip, class_name, top_k=TOP_K),
            "keywords-class": keyword_phrase_route(clip, class_name, train, top_k=TOP_K),
        },
    )  # fmt: skip
    frame = protocol.results(groups)
    shipped = {g: tuple(evaluation.normalities()[g].phrases) for g in groups}
    used = protocol.phrases_used
    frame["phrases"] = [
        " | ".join(shipped[r.group] if r.route == "text" else used[(r.group, r.draw, r.route, r.k)])
        for r in frame.itertuples()
    ]
    return frame, {g: words[g] for g in groups}, nd, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="carpet,wood,hazelnut,leather,capsule")
    parser.add_argument("--variants", default="aprilgan,patchcore", help=f"of {list(VARIANTS)}")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("book/data"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    ks = (1, 5)
    data = evaluation_data(toy_dir() / "eval-synthetic-64", classes)
    frames, words, seconds = [], {}, {}
    for variant in args.variants.split(","):
        for class_name in classes:
            tick = time.perf_counter()
            frame, words[class_name], nd, cfg = class_rows(class_name, variant, data, args.draws, ks)
            frames.append(frame)
            seconds[f"{variant}/{class_name}"] = round(time.perf_counter() - tick, 1)
            print(f"{variant}/{class_name}: {seconds[f'{variant}/{class_name}']} s", flush=True)
    frame = pd.concat(frames, ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "keyword_prompts.csv", index=False)
    delta = 100 * (frame["auroc_after"] - frame["auroc_before"])
    print(frame.assign(delta=delta).groupby(["detector", "route", "k"])["delta"].agg(["mean", "std"]))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    record = {
        "what": "toy world (generated data, models trained here); not the paper's results",
        "machine": machine(), "commit": commit.strip(), "seed": cfg.seed, "classes": classes,
        "readable_words": words, "draws": args.draws, "ks": list(ks), "top_k": TOP_K,
        "variants": {v: VARIANTS[v][1] for v in args.variants.split(",")},
        "weights": {"nd_clip": nd.aprilgan.backbone.weights, "nd_adapters": nd.aprilgan.adapters.weights},
        "seconds": seconds, "total_seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    (args.out / "keyword_prompts.json").write_text(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
