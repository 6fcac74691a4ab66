"""The feature cache: hits skip compute, every key part invalidates, writers race safely, prune works."""

import copy
import errno
import multiprocessing
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image
from safetensors.torch import load_file

import nandlib.cache as cache_module
from nandlib.backbones import load_clip
from nandlib.cache import CacheWriteWarning, FeatureCache, cache_from_setting, fingerprint, image_digest
from nandlib.detectors.aprilgan import AprilGAN

SETTINGS = {"model": "m", "weights": "random-init seed 0"}


def _images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)) for _ in range(count)]


class _Encoder:
    """Deterministic per-image features; records which images it was asked for."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, images):
        self.calls.append(len(images))
        pixels = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32)) for im in images])
        return {"mean": pixels.mean(dim=(1, 2)), "rows": pixels.mean(dim=2)}


def test_hit_returns_identical_features_and_computes_only_misses(tmp_path):
    cache, encoder, images = FeatureCache(tmp_path), _Encoder(), _images(3)
    first = cache.get_or_compute("demo", SETTINGS, images[:2], encoder)
    again = cache.get_or_compute("demo", SETTINGS, images[:2], encoder)
    mixed = cache.get_or_compute("demo", SETTINGS, [images[2], images[0]], encoder)
    assert encoder.calls == [2, 1]  # the second call computed nothing, the third only images[2]
    for name in ("mean", "rows"):
        assert torch.equal(first[name], again[name])
        assert torch.equal(mixed[name][1], first[name][0])
        assert torch.equal(mixed[name][0], encoder([images[2]])[name][0])
    assert (cache.hits, cache.misses) == (3, 3)
    folder = tmp_path / "demo" / fingerprint(SETTINGS)
    assert sorted(p.stem for p in folder.glob("*.safetensors")) == sorted(image_digest(i) for i in images)
    assert (folder / "settings.json").is_file()


def test_image_digest_follows_pixels_mode_and_size_not_the_object():
    image = _images(1)[0]
    assert image_digest(image) == image_digest(image.copy())
    changed = np.asarray(image).copy()
    changed[0, 0, 0] ^= 1
    assert image_digest(Image.fromarray(changed)) != image_digest(image)
    assert image_digest(image.convert("RGBA")) != image_digest(image)
    assert image_digest(image.crop((0, 0, 24, 10))) != image_digest(image)


def test_unreadable_entry_is_recomputed(tmp_path):
    cache, encoder, images = FeatureCache(tmp_path), _Encoder(), _images(1)
    expected = cache.get_or_compute("demo", SETTINGS, images, encoder)
    entry = next((tmp_path / "demo").rglob("*.safetensors"))
    entry.write_bytes(entry.read_bytes()[:10])  # truncated, as by a full disk
    assert torch.equal(cache.get_or_compute("demo", SETTINGS, images, encoder)["mean"], expected["mean"])
    assert encoder.calls == [1, 1]
    assert torch.equal(load_file(entry)["mean"], expected["mean"][0])


@pytest.fixture(scope="module")
def tiny():
    return load_clip("nand-tiny-p14", image_size=56, seed=0)


def _counting_aprilgan(backbone, cache, monkeypatch, **kwargs) -> tuple[AprilGAN, list[int]]:
    calls: list[int] = []
    original = backbone.encode_image_layers

    def counted(images, layers):
        calls.append(len(images))
        return original(images, layers)

    monkeypatch.setattr(backbone, "encode_image_layers", counted)
    return AprilGAN(backbone, "carpet", cache=cache, **kwargs), calls


def test_aprilgan_features_come_from_the_cache_identically(tiny, tmp_path, monkeypatch):
    images = _images(3)
    uncached = AprilGAN(tiny, "carpet", batch_size=2).features(images)
    detector, calls = _counting_aprilgan(tiny, FeatureCache(tmp_path), monkeypatch, batch_size=2)
    cold = detector.features(images)
    warm = detector.features(images)
    assert calls == [2, 1]  # cold: two batches encoded; warm: none
    for a, b, c in zip(uncached.patch_tokens, cold.patch_tokens, warm.patch_tokens, strict=True):
        assert torch.equal(a, b) and torch.equal(b, c)
    assert torch.equal(uncached.image_embedding, warm.image_embedding)
    # Other adapters on the same backbone and layers reuse the entries (cached before the adapters).
    other, other_calls = _counting_aprilgan(tiny, FeatureCache(tmp_path), monkeypatch, seed=5)
    other.features(images)
    assert other_calls == []


@pytest.mark.parametrize("change", ["weights", "layers", "image_size", "precision", "image"])
def test_any_key_part_change_misses(tiny, tmp_path, monkeypatch, change):
    images = _images(2)
    cache = FeatureCache(tmp_path)
    AprilGAN(tiny, "carpet", cache=cache).features(images)
    backbone, kwargs = tiny, {}
    if change == "weights":
        backbone = load_clip("nand-tiny-p14", image_size=56, seed=1)
    elif change == "layers":
        kwargs = {"layers": (1, 4)}
    elif change == "image_size":
        backbone = load_clip("nand-tiny-p14", image_size=70, seed=0)
    elif change == "precision":  # load_clip allows bf16 on CUDA only; the key must differ anyway
        backbone = copy.copy(tiny)
        backbone.precision = "bf16"
    else:
        pixels = np.asarray(images[1]).copy()
        pixels[3, 3] = 255 - pixels[3, 3]
        images = [images[0], Image.fromarray(pixels)]
    detector, calls = _counting_aprilgan(backbone, cache, monkeypatch, **kwargs)
    detector.features(images)
    assert calls == ([1] if change == "image" else [2])


def _race_writer(root: str, value: float, rounds: int, barrier) -> None:
    cache = FeatureCache(root)
    payload = {"x": torch.full((1, 256, 64), value)}
    barrier.wait()
    for _ in range(rounds):
        cache._read = lambda path: None  # force a write every round
        cache.get_or_compute("race", SETTINGS, _images(1), lambda images, payload=payload: payload)


def test_two_processes_writing_the_same_entry_leave_a_valid_one(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=_race_writer, args=(str(tmp_path), value, 30, barrier)) for value in (1.0, 2.0)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    entries = list((tmp_path / "race").rglob("*"))
    files = [p for p in entries if p.is_file()]
    assert sorted(p.suffix for p in files) == [".json", ".safetensors"]  # no temporary files left over
    stored = load_file(next(p for p in files if p.suffix == ".safetensors"))["x"]
    assert stored.shape == (256, 64) and stored.unique().numel() == 1 and stored[0, 0] in (1.0, 2.0)


def _paused_writer(root: str, value: float, half, resume) -> None:
    """Rewrite the entry of ``_images(1)``, stopping half-way through the file until told to go on."""

    def save_in_two_halves(tensors, filename, metadata=None):
        data = safetensors.torch.save(tensors, metadata=metadata)
        with open(filename, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            half.wait(timeout=60)  # every writer is half-way through the same entry
            resume.wait(timeout=60)
            handle.write(data[len(data) // 2 :])

    cache_module.save_file = save_in_two_halves
    cache = FeatureCache(root)
    cache._read = lambda path: None  # write even though the entry exists
    cache.get_or_compute("race", SETTINGS, _images(1), lambda b: {"x": torch.full((len(b), 64, 64), value)})


def test_an_entry_rewritten_by_several_processes_at_once_is_never_read_half_written(tmp_path):
    """Units on several workers (or machines sharing a file system) write the same entry at once."""
    first = FeatureCache(tmp_path).get_or_compute(
        "race", SETTINGS, _images(1), lambda b: {"x": torch.zeros(1, 64, 64)}
    )
    entry = next((tmp_path / "race").rglob("*.safetensors"))
    context = multiprocessing.get_context("fork")
    half, resume = context.Barrier(4), context.Barrier(4)
    writers = [
        context.Process(target=_paused_writer, args=(str(tmp_path), v, half, resume)) for v in (1.0, 2.0, 3.0)
    ]
    for writer in writers:
        writer.start()
    half.wait(timeout=60)
    during = FeatureCache(tmp_path)._read(entry)  # three writers are half-way through this entry
    resume.wait(timeout=60)
    for writer in writers:
        writer.join(timeout=60)
        assert writer.exitcode == 0
    after = FeatureCache(tmp_path)._read(entry)
    assert during is not None and torch.equal(during["x"], first["x"][0])
    assert after is not None and after["x"].unique().tolist() in ([1.0], [2.0], [3.0])
    assert not list(tmp_path.rglob("*.tmp"))


def test_prune_by_namespace_age_and_size(tmp_path):
    cache, images = FeatureCache(tmp_path), _images(4)
    for namespace in ("a", "b"):
        cache.get_or_compute(namespace, SETTINGS, images, _Encoder())
    entry_size = cache.size() // 8
    info = {group.namespace: group for group in cache.info()}
    assert (info["a"].entries, info["b"].entries, info["a"].settings) == (4, 4, SETTINGS)

    old = time.time() - 10 * 86400
    entries = sorted((tmp_path / "a").rglob("*.safetensors"))
    for age, path in enumerate(entries):  # entries[0] oldest
        os.utime(path, (old + age, old + age))
    cache.get_or_compute("a", SETTINGS, [images[0]], _Encoder())  # a hit refreshes "last used"
    assert cache.prune(namespace="a", unused_days=5) == (3, 3 * entry_size)
    assert {group.namespace: group.entries for group in cache.info()} == {"a": 1, "b": 4}

    assert cache.prune(max_bytes=2 * entry_size) == (3, 3 * entry_size)  # least recently used go first
    assert {group.namespace: group.entries for group in cache.info()} == {"a": 1, "b": 1}
    assert cache.prune() == (2, 2 * entry_size)
    assert cache.info() == [] and cache.size() == 0
    with pytest.raises(ValueError, match="max_bytes"):
        cache.prune(max_bytes=-1)


def test_cache_setting_values(tmp_path, monkeypatch):
    monkeypatch.setenv("NAND_CACHE_DIR", str(tmp_path / "env"))
    assert cache_from_setting(None).root == tmp_path / "env"
    assert cache_from_setting("off") is None and cache_from_setting("") is None
    assert cache_from_setting(str(tmp_path)).root == tmp_path
    with pytest.raises(ValueError, match="namespace"):
        FeatureCache(tmp_path).folder("../x", SETTINGS)


def test_winclip_reuses_cached_embeddings_for_references_and_tests(tmp_path, monkeypatch):
    import nandlib.detectors.winclip.detector as winclip_module
    from nandlib.detectors.winclip import WinCLIP

    calls: list[int] = []
    original = winclip_module.encode_images
    monkeypatch.setattr(
        winclip_module,
        "encode_images",
        lambda visual, pixels, *a: calls.append(len(pixels)) or original(visual, pixels, *a),
    )
    backbone = load_clip("nand-tiny-p16", image_size=64, seed=0)
    text = torch.randn(2, backbone.embed_dim, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(WinCLIP, "text_embeddings", property(lambda self: text))  # not what is cached
    train, test = _images(3, seed=1), _images(2, seed=2)
    plain = WinCLIP(backbone, "bottle", k_shot=1).fit(train).predict(test)
    runs = [
        WinCLIP(backbone, "bottle", k_shot=1, cache=FeatureCache(tmp_path)).fit(train).predict(test)
        for _ in "ab"
    ]
    assert calls == [1, 2, 1, 2]  # plain, then the cold cached run; the warm one encoded nothing
    for run in runs:
        assert torch.equal(run.maps, plain.maps) and torch.equal(run.scores, plain.scores)


def test_patchcore_reuses_cached_patch_features_for_fit_and_predict(tmp_path, monkeypatch):
    from nandlib.detectors.patchcore import PatchCore

    def build(cache):
        return PatchCore("resnet18", layers=("layer1", "layer2"), resize=40, crop=32, pretrain_dim=16,
                         target_dim=8, projection_dim=4, num_starts=2, sigma=0, cache=cache)  # fmt: skip

    train, test = _images(3, seed=1), _images(2, seed=2)
    plain = build(None).fit(train).predict(test)
    calls: list[int] = []
    original = PatchCore.embed_tensor
    monkeypatch.setattr(PatchCore, "embed_tensor", lambda self, b: calls.append(len(b)) or original(self, b))
    runs = [build(FeatureCache(tmp_path)).fit(train).predict(test) for _ in "ab"]
    assert calls == [3, 2]  # the second detector extracted nothing
    for run in runs:
        assert torch.equal(run.maps, plain.maps) and torch.equal(run.scores, plain.scores)
    with pytest.raises(ValueError, match="cache"):
        PatchCore(backbone=build(None).backbone, cache=FeatureCache(tmp_path))


def _hub_like_model_folder(root) -> list:
    """A folder laid out like a model hub's cache entry: weights beside config and readme."""
    snapshot = root / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    files = [snapshot / "model.safetensors", snapshot / "config.json", snapshot / "README.md"]
    for path in files:
        path.write_text("not a feature cache entry")
    return files


def test_prune_deletes_nothing_in_a_folder_the_cache_did_not_write(tmp_path):
    files = _hub_like_model_folder(tmp_path)
    with pytest.raises(ValueError, match=r"not a nandlib feature cache.*\.nandlib-cache"):
        FeatureCache(tmp_path).prune()
    (tmp_path / ".nandlib-cache").touch()  # even marked as a cache: no folder there is the cache's
    assert FeatureCache(tmp_path).prune() == (0, 0)
    assert all(path.is_file() for path in files)
    assert FeatureCache(tmp_path).info() == []


def test_prune_leaves_files_it_did_not_write_beside_its_entries(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.get_or_compute("demo", SETTINGS, _images(2), _Encoder())
    folder = cache.folder("demo", SETTINGS)
    foreign = [folder / "notes.txt", folder / "weights.safetensors"]
    for path in foreign:
        path.write_text("mine")
    assert cache.prune()[0] == 2
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "weights.safetensors"]


@pytest.mark.parametrize("namespace", ["../..", "..", "a/../..", "."])
def test_prune_refuses_namespace_outside_root(tmp_path, namespace):
    root = tmp_path / "deep" / "cache"
    cache = FeatureCache(root)
    cache.get_or_compute("demo", SETTINGS, _images(1), _Encoder())
    victim = tmp_path / "victim.safetensors"  # what root/../../*/*.safetensors would match
    victim.write_text("outside the cache")
    with pytest.raises(ValueError, match=re.escape(repr(namespace))):
        cache.prune(namespace=namespace)
    assert victim.is_file() and cache.info()[0].entries == 1


def test_prune_unknown_namespace_names_the_known_ones(tmp_path):
    cache = FeatureCache(tmp_path)
    for namespace in ("b", "a"):
        cache.get_or_compute(namespace, SETTINGS, _images(1), _Encoder())
    with pytest.raises(ValueError, match=r"'bogus'.* a, b"):
        cache.prune(namespace="bogus")
    assert [group.entries for group in cache.info()] == [1, 1]


def test_info_and_prune_on_a_file_root_error_naming_it(tmp_path):
    path = tmp_path / "cache.txt"
    path.write_text("a file")
    for call in (FeatureCache(path).info, FeatureCache(path).prune):
        with pytest.raises(NotADirectoryError, match=re.escape(str(path))):
            call()


def test_unwritable_cache_warns_once_naming_the_folder_and_computes(tmp_path):
    (tmp_path / "file").write_text("a file where the cache root's parent should be")
    cache, encoder, images = FeatureCache(tmp_path / "file" / "cache"), _Encoder(), _images(2)
    with pytest.warns(CacheWriteWarning) as caught:
        first = cache.get_or_compute("demo", SETTINGS, images, encoder)
        again = cache.get_or_compute("demo", SETTINGS, images, encoder)
    assert len(caught) == 1 and str(tmp_path / "file" / "cache" / "demo") in str(caught[0].message)
    assert encoder.calls == [2, 2] and not cache.writable
    assert torch.equal(first["rows"], encoder(images)["rows"]) and torch.equal(again["mean"], first["mean"])


def test_full_disk_warns_with_the_os_error_and_leaves_no_temporaries(tmp_path, monkeypatch):
    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "save_file", full)
    cache, images = FeatureCache(tmp_path), _images(2)
    with pytest.warns(CacheWriteWarning, match="No space left on device"):
        out = cache.get_or_compute("demo", SETTINGS, images, _Encoder())
    assert torch.equal(out["mean"], _Encoder()(images)["mean"])
    assert sorted(p.name for p in cache.folder("demo", SETTINGS).iterdir()) == ["settings.json"]


def test_bit_flipped_entry_is_a_miss_and_is_rewritten(tmp_path):
    cache, encoder, images = FeatureCache(tmp_path), _Encoder(), _images(1)
    expected = cache.get_or_compute("demo", SETTINGS, images, encoder)
    entry = next(cache.folder("demo", SETTINGS).glob("*.safetensors"))
    data = bytearray(entry.read_bytes())
    data[-1] ^= 0x10  # the last tensor's last byte: still a valid file, another number
    entry.write_bytes(bytes(data))
    again = cache.get_or_compute("demo", SETTINGS, images, encoder)
    assert encoder.calls == [1, 1]
    assert all(torch.equal(again[name], expected[name]) for name in expected)
    assert entry.read_bytes() != bytes(data)  # rewritten: the next read is a hit again
    cache.get_or_compute("demo", SETTINGS, images, encoder)
    assert encoder.calls == [1, 1]


def test_stale_temporaries_are_removed_on_next_use_and_by_prune(tmp_path):
    cache, images = FeatureCache(tmp_path), _images(1)
    cache.get_or_compute("demo", SETTINGS, images, _Encoder())
    folder = cache.folder("demo", SETTINGS)
    names = [f".{'a' * 32}.safetensors.1f3a9c0e.tmp", ".settings.json.0a1b2c3d.tmp", ".tmpAb12Cd"]
    two_hours_ago = time.time() - 7200

    def leave_temporaries() -> list[Path]:
        paths = [folder / name for name in names]
        for path in paths:
            path.write_bytes(b"killed mid-write")
            os.utime(path, (two_hours_ago, two_hours_ago))
        fresh = folder / ".settings.json.fresh123.tmp"  # a writer at work now: kept
        fresh.write_bytes(b"")
        return paths

    stale = leave_temporaries()
    FeatureCache(tmp_path).get_or_compute("demo", SETTINGS, images, _Encoder())  # a hit
    assert not any(path.exists() for path in stale) and (folder / ".settings.json.fresh123.tmp").exists()
    stale = leave_temporaries()
    cache.prune(unused_days=100)
    assert not any(path.exists() for path in stale) and cache.info()[0].entries == 1


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_cache_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        FeatureCache(tmp_path).get_or_compute("demo", SETTINGS, _images(1), _Encoder())
    finally:
        os.umask(previous)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".json", ".safetensors"}
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o666 & ~umask)}
