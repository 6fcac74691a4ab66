"""Sphinx extension: each page's scripts once.

Jupyter Book 1.0.4 (Sphinx 7.4) writes sphinx-thebe's and sphinx-togglebutton's inline scripts twice into
every page; the second ``const THEBE_JS_URL`` is a console error ("has already been declared") in every
browser, which ``make check-book`` rightly reports (the copies differ only in a filename of ``None``
against ``""``, so Sphinx does not see them as one). This drops repeated scripts from the page context.
"""

from __future__ import annotations

from typing import Any


def unique_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Keep the first of identical scripts (same file or body, same attributes) of a page."""
    seen: set[str] = set()
    scripts = []
    for script in context.get("script_files", []):
        # the same inline script is added once with filename None, once with "" (the duplicate)
        key = f"{getattr(script, 'filename', script) or ''} {getattr(script, 'attributes', {})!r}"
        if key not in seen:
            seen.add(key)
            scripts.append(script)
    context["script_files"] = scripts


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
