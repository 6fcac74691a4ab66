"""``nand cache info`` and ``nand cache prune``: they touch only the cache and fail loudly on wrong input."""

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from nandlib.cache import FeatureCache
from nandlib.cli import app

runner = CliRunner()


def _filled_cache(root) -> FeatureCache:
    cache = FeatureCache(root)
    image = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    cache.get_or_compute("clip-layers", {"model": "m"}, [image], lambda images: {"x": torch.ones(1, 4)})
    return cache


def test_prune_all_on_a_model_hub_folder_deletes_nothing(tmp_path):
    snapshot = tmp_path / "models--org--clip" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    files = [snapshot / name for name in ("open_clip_model.safetensors", "config.json", "README.md")]
    for path in files:
        path.write_text("model files")
    result = runner.invoke(app, ["cache", "prune", "--root", str(tmp_path / "models--org--clip"), "--all"])
    assert result.exit_code == 1 and "not a nandlib feature cache" in result.output
    assert all(path.is_file() for path in files)


def test_prune_unknown_namespace_fails_naming_the_known_ones(tmp_path):
    _filled_cache(tmp_path)
    result = runner.invoke(app, ["cache", "prune", "--root", str(tmp_path), "--namespace", "bogus", "--all"])
    assert result.exit_code == 1 and "'bogus'" in result.output and "clip-layers" in result.output
    assert FeatureCache(tmp_path).info()[0].entries == 1


def test_prune_namespace_outside_the_root_fails(tmp_path):
    root = str(tmp_path / "cache")
    _filled_cache(root)
    result = runner.invoke(app, ["cache", "prune", "--root", root, "--namespace", "..", "--all"])
    assert result.exit_code == 1 and "'..'" in result.output


def test_info_on_a_file_fails_naming_it(tmp_path):
    path = tmp_path / "cache.txt"
    path.write_text("a file")
    result = runner.invoke(app, ["cache", "info", "--root", str(path)])
    assert result.exit_code == 1 and str(path) in result.output and "0 entries" not in result.output


def test_info_and_prune_on_a_cache(tmp_path):
    _filled_cache(tmp_path)
    info = runner.invoke(app, ["cache", "info", "--root", str(tmp_path)])
    assert info.exit_code == 0 and "clip-layers" in info.output and ": 1 entries" in info.output
    args = ["cache", "prune", "--root", str(tmp_path), "--namespace", "clip-layers", "--all"]
    pruned = runner.invoke(app, args)
    assert pruned.exit_code == 0 and "deleted 1 entries" in pruned.output
