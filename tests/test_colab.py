"""The Colab install cells: one setting (``_config.yml``'s repository), stamped into the notebooks."""

import shutil
import subprocess
from pathlib import Path

import pytest

from nandlib.colab import NOTEBOOKS, install_cell, installed_source, repository, sync

CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_install_cells_follow_the_repository_in_config(name):
    url, branch = repository(CHECKOUT)
    assert installed_source(CHECKOUT / name) == install_cell(url, branch), (
        f"{name}'s install cell disagrees with repository.url/branch in _config.yml: "
        "run `make colab-sync` and commit the notebooks"
    )


def _copy(tmp_path: Path) -> Path:
    shutil.copy(CHECKOUT / "_config.yml", tmp_path / "_config.yml")
    for name in NOTEBOOKS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CHECKOUT / name, tmp_path / name)
    return tmp_path


def test_a_fork_changes_the_url_in_one_place(tmp_path):
    checkout = _copy(tmp_path)
    config = checkout / "_config.yml"
    config.write_text(config.read_text().replace(repository(CHECKOUT)[0], "https://github.com/me/fork"))
    assert sorted(sync(checkout)) == sorted(checkout / name for name in NOTEBOOKS)
    for name in NOTEBOOKS:
        source = installed_source(checkout / name)
        assert 'REPOSITORY = "https://github.com/me/fork"' in source
        assert 'f"nandlib[book] @ git+{REPOSITORY}@{BRANCH}"' in source
    assert sync(checkout) == []  # stamped: nothing left to change


def test_the_cell_installs_nothing_where_nandlib_is_installed(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: calls.append(args))
    exec(install_cell("https://example.org/x", "main"), {})
    assert calls == []


def test_the_cell_installs_the_book_extra_from_the_repository_where_nandlib_is_missing(monkeypatch):
    import importlib.util

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append(command))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    exec(install_cell("https://example.org/x", "dev"), {})
    assert calls and calls[0][-1] == "nandlib[book] @ git+https://example.org/x@dev"


def test_a_config_without_a_repository_url_is_named(tmp_path):
    (tmp_path / "_config.yml").write_text("title: x\n")
    with pytest.raises(ValueError, match=r"_config.yml: repository.url"):
        repository(tmp_path)
    with pytest.raises(FileNotFoundError, match="no _config.yml"):
        repository(tmp_path / "nowhere")
