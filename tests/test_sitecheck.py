"""The built-book check: table of contents, broken links, anchors and images on a hand-made site."""

from pathlib import Path

import pytest

from nandlib.sitecheck import CHROMIUM, SCREENSHOTS, browse, check_links, toc_pages


def _site(tmp_path: Path) -> tuple[Path, Path]:
    book = tmp_path / "book"
    (book / "generated" / "runs" / "aprilgan").mkdir(parents=True)
    (book / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n"
        "  - file: results\n    sections:\n      - glob: generated/runs/*/*\n"
        "  - file: try.ipynb\n"
    )
    for name in ("carpet", "bottle"):
        (book / "generated" / "runs" / "aprilgan" / f"{name}.ipynb").write_text("{}")
        (book / "generated" / "runs" / "aprilgan" / f"{name}.kernel.log").write_text("")  # no page
    html = tmp_path / "html"
    (html / "generated" / "runs" / "aprilgan").mkdir(parents=True)
    (html / "_images").mkdir()
    (html / "_images" / "map.png").write_bytes(b"png")
    pages = {
        "intro.html": '<a href="results.html#tables">ok</a> <a href="https://example.org/x">out</a>',
        "results.html": '<h1 id="tables">T</h1><img src="_images/map.png"><a href="#tables">self</a>',
        "try.html": '<img src="data:image/png;base64,AAAA"><a href="mailto:a@b.c">mail</a>',
        "generated/runs/aprilgan/carpet.html": '<img src="../../../_images/map.png">',
        "generated/runs/aprilgan/bottle.html": '<a href="../../../intro.html">home</a>',
    }
    for name, body in pages.items():
        (html / name).write_text(f"<html><body>{body}</body></html>")
    return book, html


def test_toc_pages_expand_globs_and_drop_suffixes(tmp_path):
    book, _ = _site(tmp_path)
    assert toc_pages(book) == [
        "intro",
        "results",
        "generated/runs/aprilgan/bottle",
        "generated/runs/aprilgan/carpet",
        "try",
    ]


def test_a_sound_site_has_no_problems(tmp_path):
    book, html = _site(tmp_path)
    assert check_links(html, toc_pages(book)) == []


@pytest.mark.parametrize(
    ("page", "body", "expected"),
    [
        ("intro.html", '<a href="nowhere.html">x</a>', "intro: broken link nowhere.html"),
        ("intro.html", '<a href="results.html#gone">x</a>', "intro: link results.html#gone names no anchor"),
        ("results.html", '<img src="_images/lost.png">', "results: broken image _images/lost.png"),
        ("try.html", '<a href="#missing">x</a>', "try: link #missing names no anchor in try.html"),
    ],
)
def test_each_kind_of_breakage_is_named(tmp_path, page, body, expected):
    book, html = _site(tmp_path)
    (html / page).write_text(f"<html><body><p id='tables'>{body}</p></body></html>")
    problems = check_links(html, toc_pages(book))
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_page_in_the_toc_that_was_not_built_is_reported(tmp_path):
    book, html = _site(tmp_path)
    (html / "generated" / "runs" / "aprilgan" / "bottle.html").unlink()
    assert check_links(html, toc_pages(book)) == [
        f"generated/runs/aprilgan/bottle: page missing ({html}/generated/runs/aprilgan/bottle.html)"
    ]


def test_a_book_without_a_toc_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="_toc.yml"):
        toc_pages(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"no {CHROMIUM} (apt-get install chromium)")
def test_the_browser_reports_console_errors_and_images_that_do_not_load(tmp_path):
    book, html = _site(tmp_path)
    (html / "_images" / "map.png").write_bytes(b"not a png")  # present, but no image
    (html / "intro.html").write_text("<html><body><script>console.error('boom')</script></body></html>")
    (html / "try.html").write_text("<html><body><p>fine</p></body></html>")
    problems = browse(html, toc_pages(book), tmp_path / "shots")
    assert any(p.startswith("intro: console error") and "boom" in p for p in problems), problems
    assert "results: image did not load _images/map.png" in problems
    assert "generated/runs/aprilgan/carpet: image did not load ../../../_images/map.png" in problems
    assert not [p for p in problems if p.startswith(("try:", "generated/runs/aprilgan/bottle"))], problems
    assert [p.name for p in (tmp_path / "shots").iterdir()] == ["front.png"]  # the one page of SCREENSHOTS


def test_the_pages_screenshotted_are_in_the_books_toc():
    pages = toc_pages(Path(__file__).resolve().parents[1] / "book")
    assert set(SCREENSHOTS.values()) <= set(pages)
