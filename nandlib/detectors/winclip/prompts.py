"""WinCLIP's compositional prompt ensemble (CPE), read from ``prompts.yaml``.

Book: ``protocol.md``, "WinCLIP". The states and templates are data, kept verbatim from anomalib
(``prompting.py``), including its duplicated template, so that text features match anomalib exactly.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

PROMPTS_FILE = Path(__file__).with_name("prompts.yaml")
_KEYS = ("normal_states", "anomalous_states", "templates")


@cache
def _load_prompt_parts(path: Path = PROMPTS_FILE) -> dict[str, tuple[str, ...]]:
    """The three lists of ``prompts.yaml``, checked for shape."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or any(key not in data for key in _KEYS):
        raise ValueError(f"{path}: needs the lists {', '.join(_KEYS)}")
    parts = {key: tuple(data[key]) for key in _KEYS}
    for key, items in parts.items():
        if not items or any(not isinstance(item, str) or item.count("{}") != 1 for item in items):
            raise ValueError(f"{path}: {key} must be a non-empty list of strings with exactly one '{{}}'")
    return parts


def prompt_ensemble(class_name: str) -> tuple[list[str], list[str]]:
    """Normal and anomalous sentences for one object class, state-major.

    For each state ``s`` (with the class name inserted raw, e.g. ``"metal_nut"``), every template
    is filled with ``s``: ``[t.format(s.format(class_name)) for s in states for t in templates]``.
    With the shipped file this gives 7 × 21 = 147 normal and 4 × 21 = 84 anomalous sentences.

    Args:
        class_name: Object name inserted into the states, unchanged.

    Returns:
        ``(normal_sentences, anomalous_sentences)``.

    Raises:
        ValueError: If ``class_name`` is empty.
    """
    if not class_name.strip():
        raise ValueError("class_name: must be a non-empty string")
    parts = _load_prompt_parts()

    def fill(states: tuple[str, ...]) -> list[str]:
        templates = parts["templates"]
        return [template.format(state.format(class_name)) for state in states for template in templates]

    return fill(parts["normal_states"]), fill(parts["anomalous_states"])
