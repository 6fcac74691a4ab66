"""Check a built book as a reader meets it: every page of the table of contents, in headless Chromium.

Two parts. :func:`check_links` reads the built HTML and reports internal links, anchors and images that
lead nowhere (no browser needed). :func:`browse` serves the site over HTTP, opens every page in Debian's
headless Chromium through selenium and ``/usr/bin/chromedriver`` (nothing downloads a browser), reports
console errors and images that did not load, and saves screenshots. ``make check-book`` runs both on
``_build/html`` (``python -m nandlib.sitecheck``); ``.ci/run`` runs it after ``make book``.
"""

from __future__ import annotations

import argparse
import functools
import glob
import http.server
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH = 1300
SETTLE = 0.3
"""Seconds a page is given after its load event before its console is read."""
SCREENSHOTS = {"front": "intro", "results": "generated/tables", "playground": "try_your_normality"}
"""Screenshot name → page (document name) saved by :func:`browse`."""


SOURCE_SUFFIXES = (".md", ".ipynb", ".rst")
"""Files a glob of the table of contents makes pages of, as Sphinx does (a kernel log is none)."""


def toc_pages(book_dir: Path) -> list[str]:
    """Document names (``generated/tables``) of every page in ``book_dir/_toc.yml``, globs expanded.

    Raises:
        FileNotFoundError: No ``_toc.yml`` in ``book_dir``.
    """
    toc_file = book_dir / "_toc.yml"
    if not toc_file.is_file():
        raise FileNotFoundError(f"sitecheck: no table of contents {toc_file}")
    toc = yaml.safe_load(toc_file.read_text())
    pages = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries or []:
            if "file" in entry:
                pages.append(str(Path(entry["file"]).with_suffix("")))
            if "glob" in entry:
                found = [f for f in glob.glob(str(book_dir / entry["glob"])) if f.endswith(SOURCE_SUFFIXES)]
                pages.extend(sorted(str(Path(f).relative_to(book_dir).with_suffix("")) for f in found))
            walk(entry.get("sections", []))

    walk(toc.get("chapters", []))
    return pages


class _PageParser(HTMLParser):
    """Links, image sources and anchor ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if values.get(key):
                self.ids.add(values[key])
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        if tag == "img" and values.get("src"):
            self.images.append(values["src"])


@functools.cache
def _parse(path: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def _local(reference: str) -> bool:
    parts = urlsplit(reference)
    return not parts.scheme and not parts.netloc and not reference.startswith("data:")


def check_links(html_dir: Path, pages: Sequence[str]) -> list[str]:
    """Problems with the built pages ``pages`` under ``html_dir``: missing pages, internal links to
    missing files or anchors, images whose files are missing. External links are not followed.

    Returns:
        One line per problem, naming the page and the reference (empty: none).
    """
    _parse.cache_clear()
    problems = []
    for page in pages:
        path = html_dir / f"{page}.html"
        if not path.is_file():
            problems.append(f"{page}: page missing ({path})")
            continue
        parsed = _parse(path)
        for kind, references in (("link", parsed.links), ("image", parsed.images)):
            for reference in filter(_local, references):
                target = urlsplit(reference)
                file = (path.parent / unquote(target.path)).resolve() if target.path else path
                if not file.is_file():
                    problems.append(f"{page}: broken {kind} {reference}")
                elif kind == "link" and target.fragment and file.suffix == ".html":
                    if unquote(target.fragment) not in _parse(file).ids:
                        problems.append(f"{page}: link {reference} names no anchor in {file.name}")
    return problems


@contextmanager
def serve(html_dir: Path) -> Iterator[str]:
    """Serve ``html_dir`` on a free local port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _driver():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:
        raise RuntimeError("sitecheck needs selenium: pip install 'nandlib[test]'") from error
    for program in (CHROMIUM, CHROMEDRIVER):
        if not Path(program).is_file():
            raise RuntimeError(f"sitecheck: no {program}; apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={WIDTH},900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


OFFLINE = re.compile(r"net::ERR_(NAME_NOT_RESOLVED|INTERNET_DISCONNECTED|NETWORK_CHANGED|CONNECTION_\w+)")
"""A resource from another host that could not be fetched because this machine is offline (MathJax's CDN):
listed, not counted as a problem of the book."""

BROKEN_IMAGES = (
    "return Array.from(document.images)"
    ".filter(i => i.complete && i.naturalWidth === 0).map(i => i.getAttribute('src'))"
)


def browse(html_dir: Path, pages: Sequence[str], screenshots: Path | None = None) -> list[str]:
    """Open every page in headless Chromium at :data:`WIDTH` px; report console errors and images that
    did not load; save full-page screenshots of :data:`SCREENSHOTS` into ``screenshots``.

    Resources of other hosts that fail for want of a network (:data:`OFFLINE`) are printed, not reported.

    Returns:
        One line per problem (empty: none).
    """
    problems: list[str] = []
    offline: set[str] = set()
    driver = _driver()
    try:
        with serve(html_dir) as base:
            for page in pages:
                driver.get(f"{base}/{page}.html")
                time.sleep(SETTLE)  # late errors (deferred scripts) belong to this page, not the next
                for entry in driver.get_log("browser"):
                    message = entry["message"]
                    if entry["level"] != "SEVERE" or "/favicon.ico" in message:
                        continue
                    if not message.startswith(base) and OFFLINE.search(message):
                        offline.add(message.split()[0])
                    else:
                        problems.append(f"{page}: console error {message}")
                for source in driver.execute_script(BROKEN_IMAGES):
                    problems.append(f"{page}: image did not load {source}")
                names = [name for name, shown in SCREENSHOTS.items() if shown == page]
                if screenshots is not None and names:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    height = driver.execute_script("return document.body.scrollHeight")
                    driver.set_window_size(WIDTH, min(int(height) + 100, 16000))
                    for name in names:
                        driver.save_screenshot(str(screenshots / f"{name}.png"))
                    driver.set_window_size(WIDTH, 900)
    finally:
        driver.quit()
    for url in sorted(offline):
        print(f"sitecheck: not checked, no network: {url}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nandlib.sitecheck``: exit 1 and list the problems, if any."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", type=Path, default=Path("book"), help="The book's sources (_toc.yml).")
    parser.add_argument("--html", type=Path, default=Path("_build/html"), help="The built site.")
    parser.add_argument("--screenshots", type=Path, default=Path("_build/screenshots"))
    parser.add_argument("--no-browser", action="store_true", help="Only the link and image check.")
    args = parser.parse_args(argv)
    pages = toc_pages(args.book)
    problems = check_links(args.html, pages)
    if not args.no_browser:
        problems += browse(args.html, pages, args.screenshots)
    for line in problems:
        print(line)
    print(f"sitecheck: {len(pages)} pages, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
