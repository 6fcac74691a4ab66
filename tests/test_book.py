"""The book's sources as a reader and the hosting service meet them: the publishing workflow, the width
of the code on its pages."""

import json
from pathlib import Path

import pytest
import yaml

CHECKOUT = Path(__file__).resolve().parents[1]
WORKFLOW = CHECKOUT / ".github" / "workflows" / "book.yml"
BOOK_NOTEBOOKS = sorted([*(CHECKOUT / "book").glob("*.ipynb"), *(CHECKOUT / "notebooks").glob("*.ipynb")])
COLUMNS = 79


def test_the_workflow_builds_the_book_on_main_and_deploys_build_html_to_pages():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    trigger = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert trigger["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    steps = build["steps"]
    assert any(step.get("run", "").strip() == "make book" for step in steps)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    assert steps.index(next(s for s in steps if s.get("run") == "make book")) < steps.index(upload)
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])


def test_the_repository_the_workflow_publishes_is_on_github():
    config = yaml.safe_load((CHECKOUT / "_config.yml").read_text())
    assert config["repository"]["url"].startswith("https://github.com/"), (
        "_config.yml names another host: write its workflow in place of .github/workflows/book.yml"
    )


@pytest.mark.parametrize("path", BOOK_NOTEBOOKS, ids=lambda p: p.name)
def test_book_code_fits_the_page(path):
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    lines = [line.rstrip("\n") for cell in cells for line in cell["source"]]
    wide = [line for line in lines if len(line) > COLUMNS]
    assert not wide, f"{path.name}: code lines over {COLUMNS} columns are cut on the page: {wide}"
