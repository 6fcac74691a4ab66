"""Prompts as data: APRIL-GAN's ensemble (``aprilgan.yaml``) and NAND's phrase table (``phrases.yaml``).

Book: ``method.md``, "Prompts" and "Normality phrases".
"""

from nandlib.prompts.generators import LLMPromptGenerator, PromptGenerator, TablePromptGenerator
from nandlib.prompts.sentences import aprilgan_prompts, normality_prompts, sentences, templates

__all__ = [
    "LLMPromptGenerator",
    "PromptGenerator",
    "TablePromptGenerator",
    "aprilgan_prompts",
    "normality_prompts",
    "sentences",
    "templates",
]
