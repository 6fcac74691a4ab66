"""Prompt sentences: APRIL-GAN's normal/abnormal ensembles and NAND's normality prompts.

A *state* is a short phrase about the object ("damaged {}", "carpet with a loose thread"); each state
is put into each of APRIL-GAN's 35 templates, state-major, and the sentences of one group are averaged
into one text feature (Eq. 3, :meth:`nandlib.backbones.ClipBackbone.text_feature`).
Book: ``method.md``, "Prompts".
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import yaml

APRILGAN_FILE = Path(__file__).parent / "aprilgan.yaml"
_KEYS = ("normal_states", "abnormal_states", "templates")


@cache
def _aprilgan_table() -> dict[str, tuple[str, ...]]:
    table = yaml.safe_load(APRILGAN_FILE.read_text(encoding="utf-8"))
    if not isinstance(table, dict) or any(not table.get(key) for key in _KEYS):
        raise ValueError(f"{APRILGAN_FILE}: needs non-empty lists {', '.join(_KEYS)}")
    return {key: tuple(str(item) for item in table[key]) for key in _KEYS}


def templates() -> tuple[str, ...]:
    """APRIL-GAN's 35 sentence templates ("a photo of the {}." ...), in the reference order."""
    return _aprilgan_table()["templates"]


def _check_class_name(class_name: str) -> None:
    if not isinstance(class_name, str) or not class_name.strip():
        raise ValueError("class_name: must be a non-empty string")


def sentences(class_name: str, states: Sequence[str]) -> list[str]:
    """Every state in every template, state-major; ``{}`` in a state is replaced by ``class_name``.

    Args:
        class_name: Class name, inserted raw as APRIL-GAN does (``"metal_nut"``).
        states: Non-empty phrases.

    Returns:
        ``len(states) * 35`` sentences.

    Raises:
        ValueError: If ``class_name`` or ``states`` is empty or a state is an empty string.
    """
    _check_class_name(class_name)
    if isinstance(states, str) or len(states) == 0 or any(not str(s).strip() for s in states):
        raise ValueError("phrases: need a non-empty list of non-empty strings")
    filled = [state.replace("{}", class_name) for state in states]
    return [template.replace("{}", state) for state in filled for template in templates()]


def aprilgan_prompts(class_name: str) -> tuple[list[str], list[str]]:
    """APRIL-GAN's normal and abnormal sentences for one class (245 and 175).

    Args:
        class_name: Class name as the dataset folder spells it; inserted raw (``"metal_nut"``).

    Returns:
        ``(normal_sentences, abnormal_sentences)``.
    """
    table = _aprilgan_table()
    return sentences(class_name, table["normal_states"]), sentences(class_name, table["abnormal_states"])


def normality_prompts(class_name: str, phrases: Sequence[str]) -> list[str]:
    """NAND's sentences for one normality: every phrase in each of the 35 templates (state-major).

    Args:
        class_name: Class name; replaces ``{}`` inside a phrase (phrases usually name the object).
        phrases: Phrases describing the normality to add (e.g. ``["carpet with a loose thread"]``).

    Returns:
        ``len(phrases) * 35`` sentences, whose Eq. 3 average is ``f_add``.
    """
    return sentences(class_name, phrases)
