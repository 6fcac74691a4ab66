"""Throughput (images/s) of our WinCLIP and PatchCore against anomalib's, and of the NAND group sweep.

Item 4 of the benchmarks (``benchmarks/README.md``). Same model, input size and (random, seeded) weights on
both sides, same generated images, one machine, one run. anomalib lives in its own venv (``anomalib`` 2.7 with
``open-clip-torch==2.24``, as its WinCLIP needs; see ``benchmarks/winclip_vs_anomalib.py``); this script
calls itself there for anomalib's side. anomalib is given our preprocessed pixels (its preprocessing is not
timed). Timed per detector: ``setup`` (WinCLIP: the text prompt ensemble; PatchCore: fit on the training
images) and ``predict`` of the test images, each after one warm-up batch. No feature cache anywhere.

The protocol runs WinCLIP three times per class (0, 1 and 5 shots, Table 2). Second comparison: those three
runs on one class, setup included, each side as a user would run it: ours through one feature cache (cold at
the start), so each test and reference image is encoded once for the three; anomalib with one
``WinClipModel.setup`` per shot count, which encodes every image again.

The third comparison is NAND's own: APRIL-GAN + NAND over every Table 1 group of a class, encoding the
images once (:class:`nandlib.evaluation.EncodedImages`, one suppression map per group, as ``run_unit``
does through ``ClassEvaluation``) against one ``add_normality(AprilGAN, group=...).predict`` per group
(features recomputed per group).

    .venv/bin/python benchmarks/throughput.py --anomalib-python /tmp/anomalib-venv/bin/python
    .venv/bin/python benchmarks/throughput.py --parts patchcore     # one comparison only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
WINCLIP_MODEL, CLASS_NAME = "ViT-B-16-plus-240", "bottle"
SHOTS = (0, 1, 5)


def _images(count: int, seed: int, size: int = 256) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        for _ in range(count)
    ]


def _seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _ours(work: Path, n_train: int, n_test: int, batch_size: int, parts: set[str]) -> dict:
    from nandlib.detectors.patchcore import PatchCore

    train, test = _images(n_train, 1), _images(n_test, 2)
    results: dict = {}
    if "winclip" in parts:
        results |= _ours_winclip(work, train, test, batch_size)
    if "patchcore" in parts:
        patchcore = PatchCore(batch_size=batch_size)
        torch.save(patchcore.backbone.state_dict(), work / "wrn50.pt")
        torch.save((patchcore.preprocess(train), patchcore.preprocess(test)), work / "patchcore_pixels.pt")
        patchcore.fit(train[:2]).predict(test[:1])  # warm-up
        results["patchcore"] = {"setup": _seconds(lambda: patchcore.fit(train))}
        results["patchcore"]["predict"] = _seconds(lambda: patchcore.predict(test))
        results["patchcore"]["memory_bank"] = list(patchcore.memory_bank_.shape)
    return results


def _ours_winclip(work: Path, train: list, test: list, batch_size: int) -> dict:
    from nandlib.backbones import load_clip
    from nandlib.detectors.winclip import WinCLIP

    backbone = load_clip(WINCLIP_MODEL, seed=0)
    torch.save(backbone.model.state_dict(), work / "clip.pt")
    winclip = WinCLIP(backbone, CLASS_NAME, batch_size=batch_size)
    winclip.predict(test[:1])  # warm-up (and text embeddings)
    winclip._text = None
    results = {"winclip": {"setup": _seconds(lambda: winclip.text_embeddings)}}
    torch.save(backbone.preprocess(test), work / "winclip_pixels.pt")
    results["winclip"]["predict"] = _seconds(lambda: winclip.predict(test))

    results["winclip"]["gflop_per_image"] = _winclip_gflop(winclip)
    results["winclip_shots"] = _winclip_shots(work, backbone, train, test, batch_size)
    return results


def _winclip_gflop(winclip) -> float:
    """Floating-point operations of one image through the visual tower: the image plus every window sequence.

    Counts the matrix products (QKV, output projection, MLP, attention scores and mix); LayerNorm, GELU and
    softmax are left out, so the figure is a lower bound of the work.
    """
    visual = winclip.backbone.model.visual
    width, blocks = visual.conv1.out_channels, len(visual.transformer.resblocks)
    hidden = visual.transformer.resblocks[0].mlp.c_fc.out_features
    cells = winclip.grid[0] * winclip.grid[1]
    lengths = [1 + cells] + [1 + int(mask.shape[0]) for mask in winclip.masks for _ in range(mask.shape[1])]
    per_token = 4 * width * width + 2 * width * hidden
    macs = sum(blocks * (n * per_token + 2 * n * n * width) for n in lengths)
    return 2 * macs / 1e9


def _gemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """This machine's sustained fp32 matrix-product rate (best of ``repeats`` ``size``³ products)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _winclip_shots(work: Path, backbone, train: list, test: list, batch_size: int) -> dict:
    """Seconds of WinCLIP 0-, 1- and 5-shot (fit + predict) on one class through one cold feature cache."""
    from nandlib.cache import FeatureCache
    from nandlib.detectors.winclip import WinCLIP

    shutil.rmtree(work / "cache", ignore_errors=True)
    cache = FeatureCache(work / "cache")
    references = {}

    def run() -> None:
        for k_shot in SHOTS:
            detector = WinCLIP(backbone, CLASS_NAME, k_shot=k_shot, batch_size=batch_size, cache=cache)
            detector.fit(train).predict(test)
            references[k_shot] = list(detector.reference_indices_)

    seconds = _seconds(run)
    torch.save(backbone.preprocess(train), work / "winclip_train_pixels.pt")
    return {"seconds": seconds, "references": references, "misses": cache.misses, "hits": cache.hits}


def _anomalib(work: Path, n_test: int, batch_size: int, parts: set[str]) -> None:
    """anomalib's side (runs inside the anomalib venv); writes ``anomalib.json``."""
    results: dict = {}
    if "winclip" in parts:
        results |= _anomalib_winclip(work, batch_size)
    if "patchcore" in parts:
        results |= _anomalib_patchcore(work, batch_size)
    (work / "anomalib.json").write_text(json.dumps(results))


def _anomalib_winclip(work: Path, batch_size: int) -> dict:
    import anomalib.models.image.winclip.torch_model as winclip_torch

    results: dict = {}
    winclip_torch.PRETRAINED = None
    model = winclip_torch.WinClipModel().eval()
    model.clip.load_state_dict(torch.load(work / "clip.pt", weights_only=True))
    pixels = torch.load(work / "winclip_pixels.pt")
    model.setup(CLASS_NAME)
    model(pixels[:1])  # warm-up
    results["winclip"] = {"setup": _seconds(lambda: model.setup(CLASS_NAME))}
    results["winclip"]["predict"] = _seconds(lambda: [model(b) for b in pixels.split(batch_size)])
    train = torch.load(work / "winclip_train_pixels.pt")
    references = json.loads((work / "ours.json").read_text())["winclip_shots"]["references"]

    def shots() -> None:
        for k_shot in SHOTS:
            chosen = references[str(k_shot)]
            model.setup(CLASS_NAME, train[chosen] if chosen else None)
            for batch in pixels.split(batch_size):
                model(batch)

    results["winclip_shots"] = {"seconds": _seconds(shots)}
    return results


def _anomalib_patchcore(work: Path, batch_size: int) -> dict:
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    results: dict = {}
    patchcore = PatchcoreModel(layers=["layer2", "layer3"], backbone="wide_resnet50_2", pre_trained=False)
    extractor = patchcore.feature_extractor.feature_extractor  # timm's, cut after layer3
    state = torch.load(work / "wrn50.pt", weights_only=True)
    extractor.load_state_dict({key: state[key] for key in extractor.state_dict()})
    train, test = torch.load(work / "patchcore_pixels.pt")

    def fit() -> None:
        patchcore.train()
        patchcore.embedding_store = []
        with torch.no_grad():
            for batch in train.split(batch_size):
                patchcore(batch)
        patchcore.subsample_embedding(0.1)
        patchcore.eval()

    def predict() -> None:
        with torch.no_grad():
            for batch in test.split(batch_size):
                patchcore(batch)

    fit()
    with torch.no_grad():
        patchcore(test[:1])  # warm-up
    results["patchcore"] = {"setup": _seconds(fit), "predict": _seconds(predict)}
    results["patchcore"]["memory_bank"] = list(patchcore.memory_bank.shape)
    return results


def _nand_sweep(model: str, image_size: int, n_test: int, class_name: str) -> dict:
    """Seconds of the group sweep with features computed once vs recomputed per group."""
    from nandlib.backbones import load_clip
    from nandlib.data import anomaly_groups
    from nandlib.detectors.aprilgan import AprilGAN
    from nandlib.evaluation import EncodedImages
    from nandlib.nand import NormalityDetector, add_normality

    backbone = load_clip(model, image_size=image_size, seed=0)
    images, groups = _images(n_test, 3), list(anomaly_groups(class_name))
    aprilgan = AprilGAN(backbone, class_name)
    nd = NormalityDetector(aprilgan)
    normalities = [nd.normality(group=g) for g in groups]  # text once for both sides: not compared here
    aprilgan.text_features  # noqa: B018 - computed (and kept) before timing

    def once() -> None:
        encoded = EncodedImages(aprilgan, nd, images)
        for normality in normalities:
            encoded.predict([normality])

    def per_group() -> None:
        for group in groups:
            add_normality(aprilgan, group=group, nd=nd).predict(images)

    return {"groups": len(groups), "once": _seconds(once), "per_group": _seconds(per_group)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anomalib-python", type=Path, default=Path("/tmp/anomalib-venv/bin/python"))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nand-bench-throughput")
    parser.add_argument("--side", choices=("ours", "anomalib"), default="ours")
    parser.add_argument("--train", type=int, default=16, help="PatchCore training images")
    parser.add_argument("--test", type=int, default=16, help="test images per detector")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--nand-model", default="ViT-L-14-336")
    parser.add_argument("--nand-image-size", type=int, default=518)
    parser.add_argument("--nand-test", type=int, default=2, help="test images of the NAND sweep")
    parser.add_argument("--nand-class", default="carpet", help="class whose Table 1 groups are swept")
    parser.add_argument("--parts", default="winclip,patchcore,nand", help="comma-separated subset to time")
    args = parser.parse_args()
    work = args.work.resolve()
    parts = set(args.parts.split(","))
    if args.side == "anomalib":
        _anomalib(work, args.test, args.batch_size, parts)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import machine

    print(machine())
    work.mkdir(parents=True, exist_ok=True)
    ours = _ours(work, args.train, args.test, args.batch_size, parts)
    (work / "ours.json").write_text(json.dumps(ours))
    command = [str(args.anomalib_python), __file__, "--side", "anomalib", "--work", str(work), "--test",
               str(args.test), "--batch-size", str(args.batch_size), "--parts", args.parts]  # fmt: skip
    if parts & {"winclip", "patchcore"}:
        subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        theirs = json.loads((work / "anomalib.json").read_text())
    for name, goal in (("winclip", 2), ("patchcore", 1)):
        if name not in parts:
            continue
        mine, other = ours[name], theirs[name]
        print(
            f"{name}: ours setup {mine['setup']:.1f} s, {args.test / mine['predict']:.2f} images/s; "
            f"anomalib setup {other['setup']:.1f} s, {args.test / other['predict']:.2f} images/s; "
            f"memory banks {mine.get('memory_bank', '-')} vs {other.get('memory_bank', '-')}"
        )
        ratio = other["predict"] / mine["predict"]
        print(f"RATIO {name} throughput ours/anomalib = {ratio:.2f} (goal >= {goal})")
        if "gflop_per_image" in mine:
            gemm, flop = _gemm_gflops(), mine["gflop_per_image"] * args.test
            print(
                f"{name}: {mine['gflop_per_image']:.0f} GFLOP of matrix products per image; ours runs at "
                f"{flop / mine['predict']:.0f} GFLOP/s, anomalib at {flop / other['predict']:.0f} GFLOP/s, "
                f"this machine's fp32 matrix product at {gemm:.0f} GFLOP/s"
            )
        total = (other["setup"] + other["predict"]) / (mine["setup"] + mine["predict"])
        print(f"RATIO {name} setup+predict ours/anomalib = {total:.2f}")
    if "winclip" in parts:
        mine, other = ours["winclip_shots"], theirs["winclip_shots"]
        print(
            f"winclip 0/1/5-shot on one class ({args.test} test images): ours {mine['seconds']:.1f} s "
            f"({mine['misses']} images encoded, {mine['hits']} read from the cache), "
            f"anomalib {other['seconds']:.1f} s"
        )
        ratio = other["seconds"] / mine["seconds"]
        print(f"RATIO winclip 0/1/5-shot class throughput ours/anomalib = {ratio:.2f} (goal >= 2)")
    if "nand" not in parts:
        return
    sweep = _nand_sweep(args.nand_model, args.nand_image_size, args.nand_test, args.nand_class)
    print(
        f"APRIL-GAN + NAND, {sweep['groups']} groups of {args.nand_class}, {args.nand_test} images, "
        f"{args.nand_model} at {args.nand_image_size}: encode once {sweep['once']:.1f} s, "
        f"per group {sweep['per_group']:.1f} s"
    )
    ratio = sweep["per_group"] / sweep["once"]
    print(f"RATIO NAND sweep throughput once/per-group = {ratio:.2f} (goal >= 1)")


if __name__ == "__main__":
    main()
