"""Where normality phrases come from: the shipped phrase table or an LLM.

A :class:`PromptGenerator` turns (class, anomaly group) into a few phrases describing that defect on
that object; :func:`nandlib.prompts.normality_prompts` then puts them into APRIL-GAN's templates.
Book: ``method.md``, "Normality phrases".
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol, runtime_checkable

import yaml

PHRASES_FILE = Path(__file__).parent / "phrases.yaml"
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")  # "- ", "* ", "1. ", "2) " at a line's start


@runtime_checkable
class PromptGenerator(Protocol):
    """Anything that describes an anomaly group of a class with short phrases."""

    def phrases(self, class_name: str, group: str) -> list[str]:
        """Phrases ("carpet with a loose thread", ...) describing ``group`` on ``class_name``."""
        ...


class TablePromptGenerator:
    """Phrases read from a YAML table ``class -> group -> [phrase, ...]`` (default: the shipped one).

    Args:
        path: YAML file; defaults to ``nandlib/prompts/phrases.yaml`` (all 56 groups of Table 1).

    Raises:
        ValueError: If the file is not such a table.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else PHRASES_FILE
        table = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        if not isinstance(table, dict) or not all(
            isinstance(groups, dict)
            and all(isinstance(p, list) and p and all(isinstance(s, str) and s.strip() for s in p)
                    for p in groups.values())
            for groups in table.values()
        ):
            raise ValueError(f"{self.path}: expected class -> group -> non-empty list of phrases")
        self.table: dict[str, dict[str, list[str]]] = table

    def groups(self, class_name: str) -> list[str]:
        """Groups of ``class_name`` that have phrases, in file order.

        Raises:
            ValueError: If the class is not in the table.
        """
        if class_name not in self.table:
            raise ValueError(f"class_name: {class_name!r} has no phrases in {self.path}")
        return list(self.table[class_name])

    def phrases(self, class_name: str, group: str) -> list[str]:
        """Phrases of ``group`` for ``class_name``.

        Raises:
            ValueError: Unknown class, or unknown group for the class (the message names both).
        """
        groups = self.groups(class_name)
        if group not in groups:
            raise ValueError(
                f"group: {group!r} is not a group of class {class_name!r} in {self.path}; "
                f"known: {', '.join(groups)}"
            )
        return list(self.table[class_name][group])


class LLMPromptGenerator:
    """Phrases from an OpenAI-compatible chat-completions endpoint (off by default; needs a server).

    Configuration comes from the arguments or, when omitted, the environment variables
    ``NAND_LLM_BASE_URL`` (e.g. ``http://localhost:8000/v1``), ``NAND_LLM_API_KEY`` (optional) and
    ``NAND_LLM_MODEL``. Output is in the phrase table's format, so it can be pasted into a YAML table.

    Args:
        base_url: Endpoint root; ``/chat/completions`` is appended.
        api_key: Bearer token, if the server needs one.
        model: Model name sent to the server.
        n_phrases: Phrases asked for per group.
        timeout: Seconds to wait for the server.

    Raises:
        ValueError: If the base URL or the model is not set.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        n_phrases: int = 4,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url or os.environ.get("NAND_LLM_BASE_URL", "")
        self.api_key = api_key or os.environ.get("NAND_LLM_API_KEY", "")
        self.model = model or os.environ.get("NAND_LLM_MODEL", "")
        if not self.base_url:
            raise ValueError("base_url: not given and NAND_LLM_BASE_URL is not set")
        if not self.model:
            raise ValueError("model: not given and NAND_LLM_MODEL is not set")
        self.n_phrases = n_phrases
        self.timeout = timeout

    def _request(self, class_name: str, group: str) -> urllib.request.Request:
        thing, defect = class_name.replace("_", " "), group.replace("_", " ")
        instruction = (
            f"Write {self.n_phrases} short noun phrases, one per line, each describing a {thing} "
            f"with the defect '{defect}' as it looks in an industrial inspection photo. Each phrase "
            f"names the object, e.g. 'carpet with a loose thread'. No numbering, no other text."
        )
        body = {"model": self.model, "temperature": 0, "messages": [{"role": "user", "content": instruction}]}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.base_url.rstrip("/") + "/chat/completions"
        return urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")

    def phrases(self, class_name: str, group: str) -> list[str]:
        """Ask the server for phrases describing ``group`` on ``class_name``.

        Raises:
            RuntimeError: If the server cannot be reached or its answer holds no phrase.
        """
        request = self._request(class_name, group)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read().decode())
            text = answer["choices"][0]["message"]["content"]
        except (urllib.error.URLError, KeyError, IndexError, json.JSONDecodeError) as err:
            raise RuntimeError(f"LLM endpoint {request.full_url}: no usable answer ({err})") from err
        lines = (_BULLET.sub("", line).strip().strip("\"'").strip() for line in text.splitlines())
        phrases = [line for line in lines if line]
        if not phrases:
            raise RuntimeError(f"LLM endpoint {request.full_url}: answer holds no phrase")
        return phrases[: self.n_phrases]
