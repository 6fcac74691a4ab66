"""``nand generate``: TGVIG's prompts and generated normals (book: ``generated_normals.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

generate_app = typer.Typer(
    help="TGVIG: generated normal images for one- and few-shot detection.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

Images = Annotated[Path, typer.Option("--images", help="Folder of the given normal images.")]
Name = Annotated[str, typer.Option("--name", help="Object name W^o (e.g. hazelnut).")]
ClipModel = Annotated[str, typer.Option(help="open_clip model name (paper: ViT-B-16).")]
ClipPretrained = Annotated[str | None, typer.Option(help="open_clip pretrained tag (e.g. openai).")]
ClipCheckpoint = Annotated[Path | None, typer.Option(help="Local CLIP weights instead of a tag.")]


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"Error: {error}", err=True)
    return typer.Exit(code=1)


def _read_inputs(folder: Path, name: str) -> tuple[list, str]:
    """The images of ``folder`` and the object name, checked before any model is loaded."""
    from PIL import Image

    from nandlib.tgvig.images import check_images
    from nandlib.tgvig.keywords import check_name

    if not folder.is_dir():
        raise ValueError(f"--images: {folder} is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images = [Image.open(p).convert("RGB") for p in paths]
    check_images(images, f"--images {folder}")
    return images, check_name(name, "--name")


def _clip(model: str, pretrained: str | None, checkpoint: Path | None):
    """The CLIP of ``f`` and ``G``; random weights (neither a tag nor a file) are said on stderr."""
    from nandlib.backbones import load_clip

    clip = load_clip(model, pretrained=pretrained, checkpoint=checkpoint)
    if pretrained is None and checkpoint is None:
        typer.echo(
            f"Warning: CLIP {model} has random weights ({clip.weights}); the paper's are "
            "--clip-model ViT-B-16 --clip-pretrained openai (or a local --clip-checkpoint)",
            err=True,
        )
    return clip


@generate_app.command("prompts")
def prompts(
    images: Images,
    name: Name,
    clip_model: ClipModel = "ViT-B-16",
    clip_pretrained: ClipPretrained = None,
    clip_checkpoint: ClipCheckpoint = None,
) -> None:
    """The keyword-to-prompt generator (Eq. 1): every candidate prompt, its score, the best one."""
    from nandlib.tgvig.keywords import choose_prompt

    try:
        given, name = _read_inputs(images, name)
        choice = choose_prompt(_clip(clip_model, clip_pretrained, clip_checkpoint), name, given)
    except (ValueError, LookupError, ImportError, FileNotFoundError) as error:
        raise _fail(error) from error
    for prompt, cosine, kept in sorted(
        zip(choice.candidates, choice.cosine, choice.kept, strict=True), key=lambda r: -r[1]
    ):
        typer.echo(f"{cosine:+.4f} {'kept' if kept else 'outlier'}\t{prompt}")
    typer.echo(f"best prompt: {choice.prompt}")


@generate_app.command("images")
def images_command(
    images: Images,
    name: Name,
    out: Annotated[Path, typer.Option(help="Folder the generated images are written to.")],
    generator: Annotated[
        str, typer.Option(help="VQGAN: a local diffusers VQModel folder, a hub id, or toy (the toy world's).")
    ] = "toy",
    clip_model: ClipModel = "ViT-B-16",
    clip_pretrained: ClipPretrained = None,
    clip_checkpoint: ClipCheckpoint = None,
    prompt: Annotated[str, typer.Option(help="keywords (Eq. 1) or naive.")] = "keywords",
    variance: Annotated[str, typer.Option(help="estimated (Eq. 3) or unit (σ = 1).")] = "estimated",
    images_per_round: Annotated[int, typer.Option("-m", help="M, images per round.")] = 20,
    rounds: Annotated[int, typer.Option("-l", help="L, rounds.")] = 5,
    seed: int = 0,
) -> None:
    """Generate normal images from a few given ones (TGVIG §4) into --out."""
    from nandlib.tgvig.generator import load_vqmodel
    from nandlib.tgvig.integrator import IntegratorSettings
    from nandlib.tgvig.pipeline import generate_normals
    from nandlib.tgvig.toy import toy_vqgan

    try:
        given, name = _read_inputs(images, name)
        settings = IntegratorSettings(images_per_round=images_per_round, rounds=rounds, variance=variance)
        vqmodel = toy_vqgan(seed) if generator == "toy" else load_vqmodel(generator)
        clip = _clip(clip_model, clip_pretrained, clip_checkpoint)
        made = generate_normals(given, name, clip, vqmodel, settings, prompt, seed)
    except (ValueError, LookupError, ImportError, FileNotFoundError) as error:
        raise _fail(error) from error
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(made.images):
        image.save(out / f"generated_{index:03d}.png")
    typer.echo(
        f"prompt: {made.prompt}; kept round {made.integration.best_round + 1} of {rounds}; "
        f"{len(made.images)} images in {out}"
    )
