"""The example route with TGVIG's generated variants, on the toy world (issue 21, item 4; not a test).

For each class and Table 1 group, protocol (a) of :mod:`nandlib.examples` (``--draws`` seeded draws of
``max(ks)`` examples of the group, removed from evaluation in every route) compares, on PatchCore (a random
ResNet-18 at 64 px, as ``examples_report.py``):

- ``examples``: the ``k`` examples join the memory bank (``add_normal_examples``);
- ``examples+generated``: the ``k`` examples and the ``M`` images TGVIG generates from them
  (:class:`nandlib.tgvig.use.GeneratedExampleRoute`: object name = class name, the keyword-to-prompt
  generator scored with the toy CLIP of seed 0; ``--vqgan``: the toy VQGAN
  :func:`nandlib.tgvig.toy.toy_vqgan` of seed 0, or a ``VQModel`` folder).

Classes must have WordNet words the toy CLIP reads (carpet, screw, bottle, capsule, grid, pill; not
hazelnut). Writes ``examples_generated.csv`` (the protocol's rows), ``examples_generated.json``
(provenance, every generation's prompt and time) and ``examples_generated.png`` (one example and its
variants) to ``--out``. Book: ``generated_normals.md``, "In NAND's routes".

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -u benchmarks/examples_generated.py --threads 2 --out book/data
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
from examples_report import PATCHCORE, build
from PIL import Image
from toy_report import evaluation_data

from nandlib.checkpoints import file_fingerprint
from nandlib.data import read_class
from nandlib.evaluation import ClassEvaluation
from nandlib.examples import ExampleProtocol
from nandlib.paths import toy_dir
from nandlib.tgvig.generator import load_vqmodel
from nandlib.tgvig.integrator import IntegratorSettings
from nandlib.tgvig.toy import toy_vqgan, toy_vqgan_folder
from nandlib.tgvig.use import GeneratedExampleRoute


def figure(protocol: ExampleProtocol, route: GeneratedExampleRoute, path: Path, shown: int = 7) -> None:
    """The first example of the first group (draw 0) and the first ``shown`` images TGVIG made from it."""
    group = next(iter(protocol.evaluation.groups))
    example = protocol.data.test[protocol.draw(group, 0)[0]].image()
    images = route(group, [example])[: 1 + shown]
    size = example.width
    strip = Image.new("RGB", (size * len(images), size), "white")
    for index, image in enumerate(images):
        strip.paste(image, (index * size, 0))
    strip.resize((strip.width * 2, strip.height * 2), Image.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="carpet,screw")
    parser.add_argument("--ks", default="1", help="numbers of examples, comma-separated")
    parser.add_argument("--draws", type=int, default=1)
    parser.add_argument("--images-per-round", type=int, default=20, help="M (paper: 20)")
    parser.add_argument("--rounds", type=int, default=3, help="L")
    parser.add_argument("--vqgan", default="toy", help="toy (toy_vqgan(0)) or a VQModel folder")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("book/data"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    ks = tuple(int(k) for k in args.ks.split(","))
    settings = IntegratorSettings(images_per_round=args.images_per_round, rounds=args.rounds)
    data = evaluation_data(toy_dir() / "eval-synthetic-64", classes)
    tick = time.perf_counter()
    vqmodel = toy_vqgan(0) if args.vqgan == "toy" else load_vqmodel(args.vqgan).eval()
    vqgan_dir = toy_vqgan_folder(0) if args.vqgan == "toy" else Path(args.vqgan)
    vqgan_seconds = round(time.perf_counter() - tick, 1)
    frames, generations, seconds = [], [], {}
    for class_name in classes:
        tick = time.perf_counter()
        detector, nd, cfg = build(class_name, "patchcore", data, toy_dir() / "examples-generated" / "cache")
        evaluation = ClassEvaluation(
            detector, nd, read_class(data, class_name), label="patchcore", batch_size=cfg.batch_size
        )
        route_args = (nd.aprilgan.backbone, vqmodel, class_name, settings, cfg.seed)
        route = GeneratedExampleRoute(*route_args)
        protocol = ExampleProtocol(
            evaluation, ks=ks, draws=args.draws, seed=cfg.seed, routes=("examples",),
            example_routes={"examples+generated": route}, batch_size=cfg.batch_size,
        )  # fmt: skip
        frames.append(protocol.results())
        if class_name == classes[0]:
            figure(protocol, GeneratedExampleRoute(*route_args), args.out / "examples_generated.png")
        generations.extend({"class": class_name, **record} for record in route.records)
        seconds[class_name] = round(time.perf_counter() - tick, 1)
        print(f"{class_name}: {seconds[class_name]} s", flush=True)
    frame = pd.concat(frames, ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "examples_generated.csv", index=False)
    delta = 100 * (frame["auroc_after"] - frame["auroc_before"])
    print(frame.assign(delta=delta).groupby(["route", "k"])["delta"].agg(["mean", "std", "count"]))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    weights = file_fingerprint(next(vqgan_dir.glob("*.safetensors")))
    training = vqgan_dir / "training.json"  # the training record a trained or shipped toy VQGAN keeps
    record = {
        "what": "toy world (generated data, models trained here); not the paper's results",
        "machine": machine(), "commit": commit.strip(), "seed": cfg.seed, "classes": classes,
        "ks": list(ks), "draws": args.draws, "detector": PATCHCORE, "integrator": settings.model_dump(),
        "weights": {
            "nd_clip": nd.aprilgan.backbone.weights, "nd_adapters": nd.aprilgan.adapters.weights,
            "vqgan": f"{args.vqgan}, sha256 {weights.sha256[:12]}",
        },
        "vqgan_training": json.loads(training.read_text()) if training.is_file() else None,
        "generations": generations, "vqgan_seconds": vqgan_seconds, "seconds": seconds,
        "total_seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    (args.out / "examples_generated.json").write_text(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
