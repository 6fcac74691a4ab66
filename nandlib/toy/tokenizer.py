"""A word-level tokenizer with a compact vocabulary, for the toy CLIP (book: ``reproducing.md``, "Toy world").

open_clip's BPE tokenizer has 49,408 tokens: at width 128 its embedding table alone would be 25 MB. The toy
CLIP only ever reads sentences built from the project's prompt tables and captions, so its vocabulary is the
set of their words (a few hundred), stored one word a line next to the model config
(``nandlib/model_configs/<model>.vocab.txt``). A word outside it is refused with a ``ValueError`` naming it,
rather than silently mapped to an unknown token. Token ids follow CLIP's convention: ``0`` pads, the start
token comes second to last and the end token is the largest id (open_clip's text tower pools at the argmax).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

_WORD = re.compile(r"[a-z0-9_]+(?:[-'][a-z0-9_]+)*|[^\sa-z0-9_]")
VOCAB_SUFFIX = ".vocab.txt"


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of ``text`` (``close-up`` and ``metal_nut`` stay whole)."""
    return _WORD.findall(text.lower())


def vocabulary_of(texts: Iterable[str]) -> list[str]:
    """Sorted distinct words of ``texts`` (``{}`` placeholders removed first)."""
    return sorted({w for text in texts for w in words(text.replace("{}", " "))})


class WordTokenizer:
    """Map sentences to ``[N, context_length]`` token ids over a fixed word list.

    Args:
        vocabulary: Distinct words; word ``k`` gets id ``k + 1``.
        context_length: Tokens per sentence, start and end included (longer sentences are cut, as CLIP
            does, keeping the end token last; :func:`nandlib.backbones.tokenize` warns when it happens).
        source: Where the vocabulary came from, named in errors.

    Raises:
        ValueError: Repeated words, or a context too short for one word.
    """

    def __init__(self, vocabulary: Sequence[str], context_length: int, source: str = "vocabulary") -> None:
        if len(set(vocabulary)) != len(vocabulary) or not vocabulary:
            raise ValueError(f"{source}: need a non-empty list of distinct words")
        if context_length < 3:
            raise ValueError(f"context_length: need at least 3 tokens, got {context_length}")
        self.vocabulary = tuple(vocabulary)
        self.context_length = context_length
        self.source = source
        self._ids = {word: index + 1 for index, word in enumerate(self.vocabulary)}
        self.start_id = len(self.vocabulary) + 1
        self.end_id = len(self.vocabulary) + 2

    @property
    def vocab_size(self) -> int:
        """Embedding rows the text tower needs: padding, words, start, end."""
        return len(self.vocabulary) + 3

    @classmethod
    def from_file(cls, path: str | Path, context_length: int) -> WordTokenizer:
        """Read a vocabulary file (one word a line).

        Raises:
            FileNotFoundError: No file at ``path``.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary: no file at {path}")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return cls(lines, context_length, source=str(path))

    def encode(self, text: str) -> list[int]:
        """Ids of one sentence, start and end tokens included, cut to ``context_length``.

        Raises:
            ValueError: A word outside the vocabulary (the message names it and the sentence).
        """
        ids = []
        for word in words(text):
            if word not in self._ids:
                raise ValueError(
                    f"unknown word {word!r} in {text!r}: the toy CLIP knows only the words of {self.source}"
                )
            ids.append(self._ids[word])
        return [self.start_id, *ids[: self.context_length - 2], self.end_id]

    def token_count(self, text: str) -> int:
        """Tokens of one sentence before any cut to the context, start and end included."""
        return len(words(text)) + 2

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """Token ids ``[N, context_length]`` (int64), zero-padded, like open_clip's tokenizers."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            ids = ids if len(ids) <= length else [*ids[: length - 1], self.end_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out
