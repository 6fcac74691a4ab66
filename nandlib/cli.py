"""The ``nand`` command line (typer). Book: ``reproducing.md``."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from nandlib.data import (
    DEFAULT_URL,
    MVTEC_CLASSES,
    MVTEC_SHA256,
    DownloadError,
    download_mvtec,
    generate_dataset,
)
from nandlib.tgvig.cli import generate_app

app = typer.Typer(
    help="NAND companion: data, runs, sweeps and tables.",
    no_args_is_help=True,
    rich_markup_mode=None,  # click's help: wrapped at the terminal's width, never cut
)


def _fail(error: Exception) -> typer.Exit:
    """Print ``error`` as a one-line message (no traceback) and return the exit to raise."""
    typer.echo(f"Error: {error}", err=True)
    return typer.Exit(code=1)


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="New dataset folder (must not exist or be empty).")],
    classes: Annotated[str, typer.Option(help="Comma-separated MVTec AD classes, or 'all'.")] = "all",
    seed: Annotated[int, typer.Option(help="Base seed; each image's seed derives from it.")] = 0,
    scale: Annotated[str, typer.Option(help="'small' or 'paper' (MVTec AD's image counts).")] = "small",
    size: Annotated[int, typer.Option(min=1, help="Image side in pixels.")] = 128,
) -> None:
    """Generate a synthetic dataset in MVTec AD's layout (book: reproducing.md, "Synthetic data")."""
    names = list(MVTEC_CLASSES) if classes == "all" else [c.strip() for c in classes.split(",") if c.strip()]
    try:
        generate_dataset(out, names, seed=seed, scale=scale, size=size)
    except (ValueError, OSError) as error:
        raise _fail(error) from error
    typer.echo(f"wrote synthetic dataset ({', '.join(names)}; seed {seed}, scale {scale}) to {out}")


@app.command()
def download(
    root: Annotated[Path, typer.Option(help="Folder to create for MVTec AD (class folders go in it).")],
    url: Annotated[str, typer.Option(help="Where to download the archive from.")] = DEFAULT_URL,
    archive: Annotated[
        Path | None, typer.Option(help="Local mvtec_anomaly_detection.tar.xz; skips the download.")
    ] = None,
    sha256: Annotated[str, typer.Option(help="Expected SHA-256 of the archive; 'none' skips the check.")] = (
        MVTEC_SHA256
    ),
) -> None:
    """Download (or unpack a local copy of) MVTec AD and verify it (book: reproducing.md)."""
    try:
        download_mvtec(root, url=url, archive=archive, sha256=None if sha256.lower() == "none" else sha256)
    except (DownloadError, OSError) as error:
        raise _fail(error) from error
    typer.echo(f"MVTec AD ready at {root}")


def _set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads here and in child processes (papermill kernels read OMP_NUM_THREADS)."""
    if threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


CACHE_HELP = "Feature cache folder (default $NAND_CACHE_DIR or <user data folder>/cache); 'off' disables it."
THREADS_HELP = "Torch CPU threads (default: torch's, or OMP_NUM_THREADS)."
PROFILE_HELP = "toy | offline | paper | path to a profile YAML."
CLUSTER_HELP = (
    "Run the units on Dask: 'local' (a LocalCluster of --workers processes), a scheduler address "
    "(tcp://host:8786) or a cluster YAML file (SLURM, PBS, LSF; book: reproducing.md). "
    "Default: local processes."
)


def _profile(profile: str, data: Path | None):
    from nandlib.companion import resolve_weights
    from nandlib.profiles import load_profile

    return resolve_weights(load_profile(profile, data_root=data))


def _overrides(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs (dotted keys, YAML values) as a nested mapping."""
    import yaml

    nested: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set: expected KEY=VALUE, got {pair!r}")
        *parents, last = key.strip().split(".")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = yaml.safe_load(value)
    return nested


def _merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merge(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


@app.command()
def run(
    class_name: Annotated[str | None, typer.Option("--class", help="MVTec AD class, e.g. carpet.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (results/<detector>/<class>.csv etc.).")
    ] = None,
    profile: Annotated[str, typer.Option(help=PROFILE_HELP)] = "toy",
    detector: Annotated[
        str, typer.Option(help="One of the profile's detectors, e.g. winclip-1.")
    ] = "aprilgan",
    data: Annotated[Path | None, typer.Option(help="Dataset root (default: the profile's).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="A unit config file (YAML/JSON) instead of --profile/--detector.")
    ] = None,
    set_values: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Change one setting: KEY=VALUE, e.g. nd.clip.image_size=336 (repeatable)."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (config key seed).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (config key device).")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32 | fp16 | bf16 (config key precision).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Images per forward pass (config key batch_size).")
    ] = None,
    cache_dir: Annotated[str | None, typer.Option(help=CACHE_HELP)] = None,
    threads: Annotated[int | None, typer.Option(min=1, help=THREADS_HELP)] = None,
    show_config: Annotated[bool, typer.Option(help="Print the unit's config as YAML and stop.")] = False,
) -> None:
    """Run every Table 1 group of one class, before and after NAND (book: reproducing.md).

    The unit's config comes from --config, or from the profile's unit for --class and --detector; the
    other options change single keys of it (book: reproducing.md, "Profiles and unit configs").
    """
    import yaml

    from nandlib.config import ConfigError, load_unit_config, parse_unit_config

    _set_threads(threads)
    flags = {"seed": seed, "device": device, "precision": precision, "batch_size": batch_size}
    changes = {key: value for key, value in flags.items() if value is not None}
    if cache_dir is not None:
        changes["cache_dir"] = cache_dir
    try:
        if config is not None:
            base = load_unit_config(config).model_dump()
            given = {
                "class_name": class_name,
                "output_dir": out and str(out),
                "data_root": data and str(data),
            }
            changes |= {key: value for key, value in given.items() if value is not None}
        else:
            if class_name is None or out is None:
                raise ValueError("--class and --out are needed (or a --config file)")
            from nandlib.companion import prepare_data
            from nandlib.profiles import load_profile

            chosen = load_profile(profile, data_root=data)  # toy:… weights: resolved by run_unit
            base = chosen.unit(class_name, detector, prepare_data(chosen, data), out).model_dump()
        unit = parse_unit_config(
            _merge(_merge(base, changes), _overrides(set_values or [])), source="nand run"
        )
        if show_config:
            typer.echo(yaml.safe_dump(unit.model_dump(mode="json"), sort_keys=False), nl=False)
            return
        unit.check_device(source="nand run")
        from nandlib.run import run_unit

        frame = run_unit(unit)
    except (ConfigError, ValueError, OSError) as error:
        raise _fail(error) from error
    typer.echo(frame.round(3).to_string(index=False))


@app.command()
def sweep(
    profile: Annotated[str, typer.Option(help=PROFILE_HELP)] = "toy",
    data: Annotated[Path | None, typer.Option(help="Dataset root (overrides the profile's).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("book/generated"),
    classes: Annotated[str | None, typer.Option(help="Comma-separated subset of classes.")] = None,
    detectors: Annotated[
        str | None, typer.Option(help="Comma-separated subset, e.g. aprilgan,winclip-1.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel papermill processes.")] = 2,
    cluster: Annotated[str | None, typer.Option(help=CLUSTER_HELP)] = None,
    cache_dir: Annotated[str | None, typer.Option(help=CACHE_HELP)] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Torch CPU threads per worker.")] = None,
) -> None:
    """Run the per-class notebook for every class × detector; finished, current units are skipped.

    A unit reruns when its config, data or weights changed since it finished. Ctrl-C (or SIGTERM) stops
    the sweep and keeps the finished units; rerun to resume.
    """
    from nandlib.cluster import open_engine
    from nandlib.companion import prepare_data
    from nandlib.config import ConfigError
    from nandlib.sweep import SweepInterrupted, run_sweep

    _set_threads(threads)
    split = lambda text: [t.strip() for t in text.split(",") if t.strip()] if text else None  # noqa: E731
    try:
        chosen = _profile(profile, data)
        with open_engine(cluster, workers) as engine:
            status = run_sweep(
                chosen,
                prepare_data(chosen, data),
                out,
                classes=split(classes),
                detectors=split(detectors),
                engine=engine,
                cache_dir=cache_dir,
            )
    except SweepInterrupted as stop:
        raise _stopped(stop) from None
    except (ConfigError, ValueError, OSError, RuntimeError) as error:
        raise _fail(error) from error
    typer.echo(status.to_string(index=False))
    if not status["status"].str.startswith(("done", "skipped")).all():
        raise typer.Exit(code=1)


def _stopped(stop) -> typer.Exit:
    """Print the status of a sweep stopped by a signal; the exit is 128 + the signal (130 for Ctrl-C)."""
    if stop.status is not None:
        typer.echo(stop.status.to_string(index=False))
    typer.echo(f"{stop}: finished units are kept; rerun to resume", err=True)
    return typer.Exit(code=128 + stop.signum)


@app.command()
def tables(
    out: Annotated[Path, typer.Option(help="A sweep's output folder.")] = Path("book/generated"),
) -> None:
    """Print Table 3 and Table 2 of a sweep beside the paper's numbers."""
    from nandlib.report import load_results
    from nandlib.tables import table2, table3

    try:
        results = load_results(out)
    except FileNotFoundError as error:
        raise _fail(error) from error
    typer.echo(table3(results).to_string(index=False))
    if (results["detector"] == "aprilgan").any():
        typer.echo(table2(results, detector="aprilgan").to_string(index=False))


@app.command()
def book(
    profile: Annotated[str, typer.Option(help=PROFILE_HELP)] = "toy",
    data: Annotated[
        Path | None, typer.Option(help="Dataset root (the paper profile needs MVTec AD).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel papermill processes.")] = 2,
    cluster: Annotated[str | None, typer.Option(help=CLUSTER_HELP)] = None,
    book_dir: Annotated[Path, typer.Option(help="The book's sources (a checkout's book/).")] = Path("book"),
) -> None:
    """Sweep, aggregate and build the Jupyter Book into _build/html (what `make book` runs)."""
    from nandlib.companion import build
    from nandlib.profiles import load_profile
    from nandlib.sweep import SweepInterrupted

    try:
        build(load_profile(profile, data_root=data), book_dir, data, workers=workers, cluster=cluster)
    except SweepInterrupted as stop:
        raise _stopped(stop) from None
    except (RuntimeError, OSError, ValueError) as error:
        raise _fail(error) from error
    typer.echo(f"book built: {book_dir.parent / '_build' / 'html' / 'index.html'}")


cache_app = typer.Typer(
    help="The on-disk feature cache (book: reproducing.md, 'Feature cache').", rich_markup_mode=None
)
app.add_typer(cache_app, name="cache")
ROOT_HELP = "Cache folder (default $NAND_CACHE_DIR or <user data folder>/cache)."


@cache_app.command("info")
def cache_info(root: Annotated[Path | None, typer.Option(help=ROOT_HELP)] = None) -> None:
    """Entries and size per namespace and settings fingerprint."""
    from nandlib.cache import FeatureCache

    cache = FeatureCache(root)
    try:
        groups = cache.info()
    except NotADirectoryError as error:
        raise _fail(error) from error
    for group in groups:
        used = datetime.fromtimestamp(group.last_used).strftime("%Y-%m-%d %H:%M") if group.entries else "-"
        what = ", ".join(
            f"{k}={group.settings[k]}" for k in ("model", "weights", "image_size") if k in group.settings
        )
        typer.echo(
            f"{group.namespace:<12} {group.fingerprint}  {group.entries:>6} images  "
            f"{group.bytes / 2**20:>9.1f} MiB  last used {used}  {what}"
        )
    total = sum(group.bytes for group in groups)
    typer.echo(f"{cache.root}: {sum(g.entries for g in groups)} entries, {total / 2**20:.1f} MiB")


@cache_app.command("prune")
def cache_prune(
    root: Annotated[Path | None, typer.Option(help=ROOT_HELP)] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Only this namespace: clip-layers, winclip, patchcore.")
    ] = None,
    unused_days: Annotated[
        float | None, typer.Option(help="Delete entries unused for this many days.")
    ] = None,
    max_mib: Annotated[
        float | None, typer.Option(help="Then delete least recently used entries down to this size.")
    ] = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Delete every entry (of --namespace).")] = False,
) -> None:
    """Delete cache entries: old ones, least recently used ones above a size, or all (--all)."""
    from nandlib.cache import FeatureCache

    if unused_days is None and max_mib is None and not all_entries:
        raise _fail(ValueError("give --unused-days, --max-mib or --all"))
    max_bytes = None if max_mib is None else int(max_mib * 2**20)
    try:
        count, freed = FeatureCache(root).prune(
            namespace=namespace, unused_days=unused_days, max_bytes=max_bytes
        )
    except (ValueError, NotADirectoryError) as error:
        raise _fail(error) from error
    typer.echo(f"deleted {count} entries, {freed / 2**20:.1f} MiB")


app.add_typer(generate_app, name="generate")
toy_app = typer.Typer(
    help="The toy world: everything trained here, in minutes (book: reproducing.md).", rich_markup_mode=None
)
app.add_typer(toy_app, name="toy")


@toy_app.command("train")
def toy_train(
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default <user data folder>/toy/seed<SEED>).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of images, initialisation and batches.")] = 0,
    model: Annotated[
        str | None, typer.Option(help="Toy CLIP architecture, a config in nandlib/model_configs.")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="CLIP optimiser steps (default: ToyBudget's).")] = None,
    adapter_epochs: Annotated[
        int | None, typer.Option(help="Epochs of APRIL-GAN's linear layers (default: ToyBudget's).")
    ] = None,
    normality_weight: Annotated[
        float | None, typer.Option(help="Weight of our normality loss (0: the official recipe only).")
    ] = None,
    text_weight: Annotated[
        float | None, typer.Option(help="Weight of the CLIP's caption-only contrast (0: image terms only).")
    ] = None,
    dense_columns: Annotated[
        float | None,
        typer.Option(help="Weight of the per-patch term's caption-to-patches ranking (0: off)."),
    ] = None,
    adapter_init: Annotated[
        str | None, typer.Option(help="random (authors') | projection (default: ToyBudget's).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads (results depend on it).")] = None,
) -> None:
    """Train the toy CLIP and APRIL-GAN's linear layers (deterministic by seed on CPU)."""
    import dataclasses

    import torch

    from nandlib.paths import toy_dir
    from nandlib.toy.train import ToyBudget, train_toy

    if threads:
        torch.set_num_threads(threads)
    budget = ToyBudget()
    try:
        budget = dataclasses.replace(
            budget,
            clip=dataclasses.replace(
                budget.clip,
                model=model or budget.clip.model,
                steps=steps or budget.clip.steps,
                text_weight=budget.clip.text_weight if text_weight is None else text_weight,
                dense_columns=budget.clip.dense_columns if dense_columns is None else dense_columns,
            ),
            adapters=dataclasses.replace(
                budget.adapters,
                epochs=adapter_epochs or budget.adapters.epochs,
                normality_weight=budget.adapters.normality_weight
                if normality_weight is None
                else normality_weight,
                init=adapter_init or budget.adapters.init,
            ),
        )
        weights = train_toy(out or toy_dir() / f"seed{seed}", seed, budget, log=typer.echo)
    except (ValueError, OSError) as error:
        raise _fail(error) from error
    typer.echo(f"clip: {weights.clip}\nadapters: {weights.adapters}")


@app.command("train-adapters")
def train_adapters_command(
    data: Annotated[Path, typer.Option(help="Auxiliary dataset, MVTec AD layout, with masks (e.g. VisA).")],
    out: Annotated[Path, typer.Option(help="Checkpoint to write (authors' format).")],
    model: Annotated[str, typer.Option(help="CLIP model (open_clip or registered config).")] = "ViT-L-14-336",
    pretrained: Annotated[str | None, typer.Option(help="open_clip tag, e.g. openai.")] = None,
    clip_checkpoint: Annotated[Path | None, typer.Option(help="Local CLIP weights.")] = None,
    image_size: Annotated[int | None, typer.Option(min=1, help="Input size (APRIL-GAN: 518).")] = None,
    layers: Annotated[str | None, typer.Option(help="Comma-separated blocks (default L/4..L).")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs (authors: 15 on VisA).")] = 15,
    batch_size: Annotated[int, typer.Option(help="Images per step (authors: 8).")] = 8,
    seed: Annotated[int, typer.Option(help="Seed (authors: 111).")] = 111,
    normality_weight: Annotated[
        float, typer.Option(help="Our normality loss (not the authors'); 0 keeps the official recipe.")
    ] = 0.0,
    init: Annotated[
        str, typer.Option(help="random (authors') | projection (ours: from CLIP's own patch projection).")
    ] = "random",
    device: Annotated[str, typer.Option(help="cpu | cuda.")] = "cpu",
) -> None:
    """Train APRIL-GAN's linear layers with the authors' recipe (focal + dice on masks, frozen CLIP)."""
    from nandlib.backbones import load_clip
    from nandlib.training.adapters import AdapterTraining, train_adapters

    try:
        backbone = load_clip(
            model, pretrained=pretrained, checkpoint=clip_checkpoint, image_size=image_size, device=device
        )
        config = AdapterTraining(
            epochs=epochs, batch_size=batch_size, seed=seed, normality_weight=normality_weight, init=init
        )
        chosen = [int(x) for x in layers.split(",")] if layers else None
        adapters, _ = train_adapters(
            backbone,
            data,
            layers=chosen,
            config=config,
            log=lambda epoch, loss: typer.echo(f"epoch {epoch + 1}/{epochs} loss {loss:.4f}"),
        )
    except (ValueError, FileNotFoundError) as error:
        raise _fail(error) from error
    out.parent.mkdir(parents=True, exist_ok=True)
    adapters.save(out)
    typer.echo(f"wrote {out}")
