"""TGVIG: generated normal images for one- and few-shot anomaly detection (Lee & Choi, arXiv 2403.06247).

Three parts, named as in the paper's §4: the keyword-to-prompt generator (:mod:`.keywords`, Eq. 1), the
variance-aware image generator (:mod:`.generator`, Eq. 2–3) and the text-guided knowledge integrator
(:mod:`.integrator`, Eq. 4–7). They need the optional extra ``tgvig`` (diffusers, nltk):
``pip install 'nandlib[tgvig]'``. Book: ``generated_normals.md``.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str) -> ModuleType:
    """Import ``module`` (``"diffusers"``, ``"nltk"``), or say which extra brings it.

    Raises:
        ImportError: Naming the module and the extra ``nandlib[tgvig]``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{module} is needed by nandlib.tgvig: pip install 'nandlib[tgvig]' (the optional extra tgvig)"
        ) from error
