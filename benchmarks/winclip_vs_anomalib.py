"""Compare nandlib's WinCLIP with anomalib's ``WinClipModel`` on one shared random-init ViT-B-16-plus-240.

Book: ``protocol.md``, "WinCLIP". anomalib is never a dependency of nandlib: it lives in its own venv
(``anomalib[clip]`` with ``open-clip-torch==2.24.0``, as pinned by anomalib), which must also be able to
import torch and nandlib. This script runs in the project venv (open_clip 3.x) and calls itself in the
anomalib venv for the other side. Run from the repository root::

    python benchmarks/winclip_vs_anomalib.py --anomalib-python /tmp/anomalib-venv/bin/python

Steps: (1) random-init ViT-B-16-plus-240 (seed 0) in nandlib, state dict saved; (2) nandlib WinCLIP with
k = 0, 1, 5 on generated images; (3) in the anomalib venv, the same weights go into ``WinClipModel``
(text and references set up as ``WinClipModel.setup`` does), fed either nandlib's preprocessed pixels
("same pixels") or anomalib's own tensor pre-processing of the same images ("own preprocessing");
nandlib's WinCLIP is also run there, under open_clip 2.24 (sequence-first transformer); (4) the max
absolute differences of maps and scores are printed and written to ``<work>/summary.json``.

Measured (CPU, torch 2.14.1, anomalib 2.7.0, 3 test images, references chosen by seed 0): text embeddings
identical; maps and scores for k = 0, 1, 5 within 2e-7 of anomalib on the same pixels and within 2e-7
between open_clip 3.3 and 2.24; with anomalib's own tensor pre-processing, within 1.3e-4 (maps) and 9e-5
(scores), the PIL-vs-tensor bicubic resize difference (under 1/255 per pixel).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

MODEL, CLASS_NAME, SHOTS, SEED = "ViT-B-16-plus-240", "bottle", (0, 1, 5), 0
REPO = Path(__file__).resolve().parents[1]


def _generated_images(count: int, seed: int) -> list[Image.Image]:
    """Structured RGB images of several sizes (not square, so the squash matters)."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        height, width = 300 + 20 * index, 340
        ys, xs = np.mgrid[0:height, 0:width]
        channels = [np.sin(xs / 17) * 80 + 128, np.cos(ys / 29) * 80 + 128, (xs + ys) % 200 + 30]
        base = np.stack(channels, axis=-1)
        base[height // 3 : height // 2, width // 4 : width // 3] = rng.uniform(0, 255, 3)  # a blob
        pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels))
    return images


def _images() -> tuple[list[Image.Image], list[Image.Image]]:
    """Six training (normal) images and three test images."""
    return _generated_images(6, seed=1), _generated_images(3, seed=2)


def _run_nandlib(weights: Path, train: list[Image.Image], test: list[Image.Image]) -> dict:
    """nandlib WinCLIP for every k, with the pixels it feeds the model."""
    from nandlib.backbones import load_clip
    from nandlib.detectors.winclip import WinCLIP

    backbone = load_clip(MODEL, checkpoint=weights)
    results: dict = {"test_pixels": backbone.preprocess(test)}
    text = None
    for k_shot in SHOTS:
        detector = WinCLIP(backbone, CLASS_NAME, k_shot=k_shot, seed=SEED).fit(train)
        if text is not None:
            detector._text = text  # same class name and backbone: reuse the text embeddings (CPU time)
        prediction = detector.predict(test)
        text = detector.text_embeddings
        references = [train[i] for i in detector.reference_indices_]
        results[k_shot] = {
            "maps": prediction.maps,
            "scores": prediction.scores,
            "reference_indices": list(detector.reference_indices_),
            "reference_pixels": backbone.preprocess(references) if references else None,
        }
    results["text"] = text
    return results


def _run_anomalib(work: Path) -> None:
    """anomalib side (run inside the anomalib venv)."""
    import anomalib.models.image.winclip.torch_model as winclip_torch
    from anomalib.models.image import WinClip

    ours = torch.load(work / "nandlib_open_clip3.pt", weights_only=False)
    train, test = _images()
    winclip_torch.PRETRAINED = None  # random init, no download; weights come from the shared state dict
    model = winclip_torch.WinClipModel().eval()
    model.clip.load_state_dict(torch.load(work / "weights.pt", weights_only=True))
    model.setup(CLASS_NAME)
    transform = WinClip.configure_pre_processor().transform

    def own_preprocessing(images: list[Image.Image]) -> torch.Tensor:
        tensors = [torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 for image in images]
        return torch.stack([transform(tensor) for tensor in tensors])

    results: dict = {"text": model.text_embeddings.clone()}
    for mode in ("same pixels", "own preprocessing"):
        for k_shot in SHOTS:
            references = ours[k_shot]["reference_indices"]
            if mode == "same pixels":
                pixels, reference_pixels = ours["test_pixels"], ours[k_shot]["reference_pixels"]
            else:
                pixels = own_preprocessing(test)
                reference_pixels = own_preprocessing([train[i] for i in references]) if references else None
            # WinClipModel.setup(reference_images=...) would re-encode the text; these two lines are its rest.
            model.k_shot = k_shot
            if k_shot:
                model._collect_visual_embeddings(reference_pixels)
            output = model(pixels)
            results[(mode, k_shot)] = {"maps": output.anomaly_map, "scores": output.pred_score}
    torch.save(results, work / "anomalib.pt")
    torch.save(_run_nandlib(work / "weights.pt", train, test), work / "nandlib_open_clip224.pt")


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anomalib-python", type=Path, default=Path("/tmp/anomalib-venv/bin/python"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/winclip-vs-anomalib"))
    parser.add_argument("--side", choices=("nandlib", "anomalib"), default="nandlib")
    args = parser.parse_args()
    work = args.work.resolve()
    if args.side == "anomalib":
        _run_anomalib(work)
        return
    from nandlib.backbones import load_clip

    work.mkdir(parents=True, exist_ok=True)
    torch.save(load_clip(MODEL, seed=0).model.state_dict(), work / "weights.pt")
    train, test = _images()
    ours = _run_nandlib(work / "weights.pt", train, test)
    torch.save(ours, work / "nandlib_open_clip3.pt")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [str(args.anomalib_python), __file__, "--side", "anomalib", "--work", str(work)]
    subprocess.run(command, check=True, env=env)
    theirs = torch.load(work / "anomalib.pt", weights_only=False)
    ours_224 = torch.load(work / "nandlib_open_clip224.pt", weights_only=False)

    summary: dict = {"text_embeddings": _max_abs(ours["text"], theirs["text"])}
    for k_shot in SHOTS:
        summary[f"nandlib open_clip 3 vs 2.24, k={k_shot}"] = {
            "maps": _max_abs(ours[k_shot]["maps"], ours_224[k_shot]["maps"]),
            "scores": _max_abs(ours[k_shot]["scores"], ours_224[k_shot]["scores"]),
        }
        for mode in ("same pixels", "own preprocessing"):
            reference = theirs[(mode, k_shot)]
            summary[f"nandlib vs anomalib ({mode}), k={k_shot}"] = {
                "maps": _max_abs(ours[k_shot]["maps"], reference["maps"]),
                "scores": _max_abs(ours[k_shot]["scores"], reference["scores"]),
                "map range": [float(reference["maps"].min()), float(reference["maps"].max())],
            }
        summary[f"references k={k_shot}"] = ours[k_shot]["reference_indices"]
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    json.dump(summary, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
