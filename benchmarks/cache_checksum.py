"""Read cost of the feature cache's entry checksum (issue #18, item 7), next to the encode it saves.

A ``clip-layers`` entry of the paper's model (ViT-L-14-336 at 518, APRIL-GAN's four layers: 4 x 1370 x 1024
floats and the 768-d embedding, 22.4 MB) is written and read back through :class:`FeatureCache` with its
checksum checked, and with safetensors alone (what a read cost before checksums). With ``--encode``, one image
is also encoded by a random-initialised ViT-L-14-336 at 518 (cost does not depend on the weights) for the
ratio to the work a hit saves.

    .venv/bin/python benchmarks/cache_checksum.py [--repeat 5] [--encode]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import torch
from _common import machine, timed
from PIL import Image
from safetensors.torch import load_file

from nandlib.cache import FeatureCache, tensors_checksum

TOKENS, WIDTH, EMBED, LAYERS = 1 + 37 * 37, 1024, 768, (6, 12, 18, 24)


def entry() -> dict[str, torch.Tensor]:
    """Random features of one image, shaped like a ViT-L-14-336 at 518 ``clip-layers`` entry."""
    generator = torch.Generator().manual_seed(0)
    row = {"embedding": torch.randn(1, EMBED, generator=generator)}
    for layer in LAYERS:
        row[f"layer{layer}"] = torch.randn(1, TOKENS, WIDTH, generator=generator)
    return row


def encode_seconds() -> float:
    """Wall time of encoding one image with APRIL-GAN's layer taps, ViT-L-14-336 at 518, random init."""
    from nandlib.backbones import load_clip

    backbone = load_clip("ViT-L-14-336", image_size=518)
    pixels = backbone.preprocess([Image.new("RGB", (518, 518), (120, 90, 60))])
    backbone.encode_image_layers(pixels, LAYERS)  # warm-up
    seconds, _ = timed(lambda: backbone.encode_image_layers(pixels, LAYERS))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--encode", action="store_true", help="also time one ViT-L-14-336 encode")
    args = parser.parse_args()
    print(machine())
    row = entry()
    megabytes = sum(t.numel() * t.element_size() for t in row.values()) / 1e6
    image = [Image.new("RGB", (8, 8))]
    with tempfile.TemporaryDirectory() as root:
        cache = FeatureCache(root)
        settings = {"model": "bench"}
        cache.get_or_compute("clip-layers", settings, image, lambda images: row)
        path = next(Path(root).rglob("*.safetensors"))
        # A hit before checksums: safetensors' lazy (memory-mapped) load, then the stack that copies.
        before, _ = timed(lambda: {n: torch.stack([t]) for n, t in load_file(str(path)).items()}, args.repeat)
        hit, _ = timed(lambda: cache.get_or_compute("clip-layers", settings, image, None), args.repeat)
    tensors = {name: t[0] for name, t in row.items()}
    hashing, _ = timed(lambda: tensors_checksum(tensors), args.repeat)
    raw = b"".join(t.numpy().tobytes() for t in tensors.values())
    sha, _ = timed(lambda: hashlib.sha256(raw).digest(), args.repeat)
    print(f"entry {megabytes:.1f} MB: hit {before * 1e3:.1f} ms unchecked, {hit * 1e3:.1f} ms checked")
    print(f"checksum {hashing * 1e3:.1f} ms ({megabytes / hashing:.0f} MB/s); hashlib.sha256 alone "
          f"{megabytes / sha:.0f} MB/s")  # fmt: skip
    print(f"RATIO hit with checksum / without: {hit / before:.2f}")
    if args.encode:
        encode = encode_seconds()
        print(f"encode of one image, ViT-L-14-336 at 518: {encode:.2f} s")
        print(f"RATIO checksum / encode it saves: {hashing / encode:.4f}")


if __name__ == "__main__":
    main()
