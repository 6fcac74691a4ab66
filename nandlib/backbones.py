"""One loader for every CLIP backbone: open_clip names, pretrained tags, local checkpoints, random init.

Models are data: any open_clip model name (or a config JSON registered with
:func:`register_model_configs`, such as the project's ``nand-tiny-*`` test models) goes through
:func:`load_clip`. Nothing here hard-codes ViT-L sizes. Book: ``method.md``, "Backbones".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch
from open_clip.model import resize_pos_embed
from PIL import Image
from torchvision import transforms

from nandlib.checkpoints import (
    COMBINED_CLIP_KEY,
    as_state_dict,
    file_fingerprint,
    load_state_dict,
    provenance,
    read_checkpoint,
)

CONFIG_DIR = Path(__file__).parent / "model_configs"
_OPEN_CLIP_DIR = str(Path(open_clip.__file__).parent)
# Keys of OpenAI's TorchScript archives that are not parameters of an open_clip CLIP model.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


_VOCAB_DIRS: list[Path] = []
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class PromptTruncatedWarning(UserWarning):
    """A prompt has more tokens than the text context: the tokens past it are dropped and change nothing."""


def register_model_configs(path: str | Path = CONFIG_DIR) -> None:
    """Make open_clip model configs (JSON files named after the model) loadable by name.

    A config may come with a word vocabulary ``<model>.vocab.txt`` beside it (the toy CLIP's); that model
    then gets a :class:`nandlib.toy.tokenizer.WordTokenizer` instead of open_clip's BPE tokenizer.

    Args:
        path: A JSON file or a folder of them. The project's own configs are registered on import.
    """
    path = Path(path)
    open_clip.add_model_config(path)
    _VOCAB_DIRS.insert(0, path if path.is_dir() else path.parent)


register_model_configs()


@dataclass
class ClipBackbone:
    """An open_clip CLIP model with its tokenizer and input transform.

    Attributes:
        model: The open_clip model, in eval mode, on ``device``.
        tokenizer: open_clip tokenizer of the model.
        model_name: open_clip model name.
        weights: Provenance of the weights (``"random-init seed 0"``, ``"pretrained:openai"``,
            ``"checkpoint:<path> sha256:<16 hex>"``).
        image_size: Square input side in pixels.
        device: Torch device the model lives on.
        precision: ``"fp32"``, or ``"fp16"``/``"bf16"`` autocast on CUDA (as APRIL-GAN's ``test.py``).
        weights_id: What identifies the weights in cache keys when ``weights`` does not (a checkpoint's
            content, ``"checkpoint sha256:<64 hex> size:<bytes>"``, whatever path it was loaded from);
            ``None``: ``weights``.
    """

    model: torch.nn.Module
    tokenizer: object
    model_name: str
    weights: str
    image_size: int
    device: torch.device
    precision: str = "fp32"
    weights_id: str | None = None
    _transform: transforms.Compose = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_precision(self.precision, self.device)
        visual = self.model.visual
        mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        size = self.image_size
        self._transform = transforms.Compose(
            [
                transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(size),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        )

    @property
    def fingerprint(self) -> str:
        """Short identifier of model, weights, input size and precision, for caches and provenance."""
        key = f"{self.model_name}|{self.weights_id or self.weights}|{self.image_size}"
        if self.precision != "fp32":
            key += f"|{self.precision}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def feature_settings(self) -> dict[str, object]:
        """Everything about this backbone that changes its image features (a feature-cache key)."""
        config = open_clip.get_model_config(self.model_name) or {}
        return {
            "model": self.model_name,
            "config": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
            "open_clip": open_clip.__version__,
            "weights": self.weights_id or self.weights,
            "image_size": self.image_size,
            "precision": self.precision,
            "preprocess": "squash bicubic, CLIP mean/std",
        }

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for forward passes: CUDA autocast in ``precision``, nothing for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Squash each image to ``image_size`` (bicubic) and CLIP-normalise it.

        Args:
            images: PIL images (any mode; converted to RGB).

        Returns:
            Float tensor ``[B, 3, image_size, image_size]`` on ``device``.
        """
        batch = torch.stack([self._transform(im.convert("RGB")) for im in images])
        return batch.to(self.device)

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Raw (unnormalised) text embeddings ``[N, D]`` of ``prompts``.

        Warns:
            PromptTruncatedWarning: For each prompt longer than the text context (see :func:`tokenize`).

        Raises:
            ValueError: If ``prompts`` is empty or holds an empty string.
        """
        if len(prompts) == 0 or any(not p.strip() for p in prompts):
            raise ValueError("prompts: need at least one non-empty prompt")
        tokens = tokenize(self.tokenizer, prompts).to(self.device)
        with self.autocast():
            return encode_text_truncated(self.model, tokens).float()

    @torch.no_grad()
    def text_feature(self, prompts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """One text feature for a group of prompts (Eq. 3): L2-normalise each, average, re-normalise.

        This is APRIL-GAN's prompt ensemble, used for ``f_nor``, ``f_abn`` and NAND's ``f_add``
        (book: ``method.md``, "Normality detection").

        Args:
            prompts: Sentences describing one state (e.g. 245 "normal" sentences).
            batch_size: Sentences encoded per forward pass.

        Returns:
            Unit vector ``[D]`` (float32, on ``device``).

        Raises:
            ValueError: If ``prompts`` is empty or holds an empty string.
        """
        mean = self.unit_text_embeddings(prompts, batch_size).mean(dim=0)
        return torch.nn.functional.normalize(mean, dim=0)

    @torch.no_grad()
    def unit_text_embeddings(self, prompts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings ``[N, D]`` of ``prompts``, ``batch_size`` per forward pass.

        Raises:
            ValueError: If ``prompts`` is empty or holds an empty string.
        """
        if len(prompts) == 0:
            raise ValueError("prompts: need at least one non-empty prompt")
        embeddings = torch.cat(
            [self.encode_text(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)]
        )
        return torch.nn.functional.normalize(embeddings, dim=-1)

    @property
    def n_blocks(self) -> int:
        """Number of residual blocks of the vision transformer."""
        return len(self.model.visual.transformer.resblocks)

    @property
    def vision_width(self) -> int:
        """Width of the vision transformer's residual stream (1024 for ViT-L)."""
        return int(self.model.visual.transformer.width)

    @property
    def embed_dim(self) -> int:
        """Dimension of the joint image-text embedding (768 for ViT-L-14-336)."""
        return int(self.model.visual.proj.shape[1])

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid ``(rows, columns)`` at ``image_size`` (37 × 37 for patch 14 at 518)."""
        rows, cols = self.model.visual.grid_size
        return int(rows), int(cols)

    def default_layers(self) -> tuple[int, ...]:
        """Blocks at 1/4, 1/2, 3/4 and the end of the tower: (6, 12, 18, 24) for ViT-L, APRIL-GAN's choice."""
        return default_layers(self.n_blocks)

    @torch.no_grad()
    def encode_image_layers(
        self, images: torch.Tensor, layers: Sequence[int]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Image embedding and the residual stream after chosen blocks, in one forward pass.

        Follows APRIL-GAN (book: ``method.md``, "APRIL-GAN"): blocks count from 1, the tokens
        taken are the raw block outputs (no ``ln_post``, no ``proj``, CLS token first); the image
        embedding is standard CLIP (``ln_post`` on the last block's CLS token, then ``proj``).

        Args:
            images: Preprocessed batch ``[B, 3, S, S]`` (see :meth:`preprocess`).
            layers: Block numbers in ``1..n_blocks``; tokens come back in this order.

        Returns:
            ``(embedding [B, D], [tokens [B, 1 + N, W] per layer])``, raw (not normalised).

        Raises:
            ValueError: If a layer is outside ``1..n_blocks`` or the model is not a token-pooled ViT.
        """
        visual = self.model.visual
        if not hasattr(visual, "transformer") or getattr(visual, "attn_pool", None) is not None:
            raise ValueError(f"model {self.model_name!r}: encode_image_layers needs a CLS-pooled ViT")
        bad = [layer for layer in layers if not 1 <= layer <= self.n_blocks]
        if bad or not layers:
            raise ValueError(f"layers: {list(layers)} must be non-empty, within 1..{self.n_blocks}")
        with self.autocast():
            return self._encode_image_layers(images, layers)

    def _encode_image_layers(
        self, images: torch.Tensor, layers: Sequence[int]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        visual = self.model.visual
        x = visual.conv1(images.to(self.device, dtype=visual.conv1.weight.dtype))
        x = x.flatten(2).transpose(1, 2)  # [B, N, W], patches row-major
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.ln_pre(visual.patch_dropout(x))
        batch_first = getattr(visual.transformer, "batch_first", False)
        if not batch_first:
            x = x.transpose(0, 1)  # NLD -> LND
        taken: dict[int, torch.Tensor] = {}
        for number, block in enumerate(visual.transformer.resblocks, start=1):
            x = block(x)
            if number in layers:
                taken[number] = x if batch_first else x.transpose(0, 1)
        if not batch_first:
            x = x.transpose(0, 1)
        embedding = visual.ln_post(x[:, 0]) @ visual.proj
        return embedding.float(), [taken[layer].float() for layer in layers]


def check_precision(precision: str, device: torch.device | str) -> None:
    """Refuse unknown precisions and half precision off CUDA (CPU autocast is slow and changes results).

    Raises:
        ValueError: Naming ``precision`` and the device.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
    if precision != "fp32" and torch.device(device).type != "cuda":
        raise ValueError(f"precision: {precision!r} is for CUDA only; device {device} runs fp32")


def _plain_text_tower(model: torch.nn.Module) -> bool:
    """Whether ``model`` has open_clip CLIP's causal text tower pooled at the EOT/EOS token."""
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
    return (
        all(getattr(model, name, None) is not None for name in needed)
        and getattr(model, "text_pool_type", None) in ("argmax", "eos")
        and (model.text_pool_type == "argmax" or getattr(model, "text_eos_id", None) is not None)
        and getattr(model, "cls_emb", None) is None
    )


def encode_text_truncated(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` computed only up to the last pooled token of the batch.

    With a causal mask, the output at the pooled (EOT, or EOS) position depends on no later token, so cutting
    the padding off the tokens, the positional embedding and the mask leaves the pooled embeddings unchanged
    (up to float rounding), while APRIL-GAN's templates use at most ~20 of the 77 positions. One pass for
    the whole batch: on a CPU, splitting it by prompt length is slower (every pass reads all the weights).
    Models whose text tower is not the plain CLIP one fall back to ``model.encode_text``.

    Args:
        model: open_clip model.
        tokens: ``[N, context_length]`` token ids.

    Returns:
        ``[N, D]`` raw text embeddings, as ``model.encode_text`` gives them.
    """
    if not _plain_text_tower(model):
        return model.encode_text(tokens)
    if model.text_pool_type == "argmax":
        pooled = tokens.argmax(dim=-1)
    else:
        pooled = (tokens == model.text_eos_id).int().argmax(dim=-1)
    return _encode_text_prefix(model, tokens[:, : int(pooled.max()) + 1], pooled)


def _encode_text_prefix(model: torch.nn.Module, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """CLIP's text forward on ``[N, L]`` tokens (positions ``0..L-1``), pooled at ``pooled``."""
    length = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    mask = model.attn_mask[:length, :length]
    if hasattr(model.transformer, "batch_first"):  # open_clip >= 2.26 takes [N, L, D] itself
        x = model.transformer(x, attn_mask=mask)
    else:
        x = model.transformer(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)
    x = model.ln_final(x)
    x = x[torch.arange(len(x), device=x.device), pooled]
    if model.text_projection is None:
        return x
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection


def default_layers(n_blocks: int) -> tuple[int, ...]:
    """APRIL-GAN's layer choice scaled to any depth: blocks ``L/4, L/2, 3L/4, L`` (6, 12, 18, 24 for L = 24).

    Raises:
        ValueError: If ``n_blocks < 4``.
    """
    if n_blocks < 4:
        raise ValueError(f"n_blocks: need at least 4 blocks for four layers, got {n_blocks}")
    return tuple(n_blocks * quarter // 4 for quarter in (1, 2, 3, 4))


def _clip_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A CLIP state dict from an open_clip checkpoint, an OpenAI TorchScript archive, or the ``"clip"`` part
    of a combined APRIL-GAN-style checkpoint (see :mod:`nandlib.checkpoints`).

    Raises:
        CheckpointError: Naming ``path``: empty, unreadable, or not a state dict.
    """
    state = read_checkpoint(path)
    if isinstance(state, Mapping) and isinstance(state.get(COMBINED_CLIP_KEY), Mapping):
        state = state[COMBINED_CLIP_KEY]
    elif isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if isinstance(state, Mapping):
        state = {k: v for k, v in state.items() if k.removeprefix("module.") not in _OPENAI_EXTRA_KEYS}
    return as_state_dict(state, path)


def get_tokenizer(model_name: str):
    """The model's tokenizer: a word tokenizer if ``<model>.vocab.txt`` is registered, else open_clip's.

    A variant ``<base>-<suffix>`` without a vocabulary of its own shares its base's (``nand-toy-p4``
    reads ``nand-toy.vocab.txt``).
    """
    parts = model_name.split("-")
    names = ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]
    for vocabulary in (folder / f"{name}.vocab.txt" for name in names for folder in _VOCAB_DIRS):
        if vocabulary.is_file():
            from nandlib.toy.tokenizer import WordTokenizer

            context = open_clip.get_model_config(model_name)["text_cfg"]["context_length"]
            return WordTokenizer.from_file(vocabulary, context_length=context)
    return open_clip.get_tokenizer(model_name)


def _token_count(tokenizer: object, text: str) -> int | None:
    """Tokens of ``text`` before any cut, start and end included; ``None`` for tokenizers not known here."""
    if hasattr(tokenizer, "token_count"):  # nandlib.toy.tokenizer.WordTokenizer
        return tokenizer.token_count(text)
    if isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer) and tokenizer.reduction_fn is None:
        return len(tokenizer.encode(text)) + 2
    return None


def tokenize(tokenizer: object, prompts: Sequence[str]) -> torch.Tensor:
    """``tokenizer(prompts)``, warning for each prompt cut to the text context (77 tokens for CLIP's BPE).

    Only rows that fill the context can have been cut, so the others cost nothing more. Hugging Face
    tokenizers of some open_clip models are not checked.

    Returns:
        Token ids ``[N, context_length]``, exactly as ``tokenizer`` gives them.

    Warns:
        PromptTruncatedWarning: Naming the prompt and how many of its tokens were dropped.
    """
    tokens = tokenizer(list(prompts))
    context = tokens.shape[1]
    for row in torch.nonzero(tokens[:, -1]).flatten().tolist():
        length = _token_count(tokenizer, prompts[row])
        if length is not None and length > context:
            warnings.warn(
                f"prompt {prompts[row]!r} has {length} tokens but the text context holds {context}: its last "
                f"{length - context} tokens are dropped and have no effect",
                PromptTruncatedWarning,
                stacklevel=3,
            )
    return tokens


def _quiet_open_clip(record: logging.LogRecord) -> bool:
    """Root-logger filter: drop open_clip's own info and warnings ("No pretrained weights loaded ...").

    :func:`load_clip` loads the weights itself right after ``create_model``; other sources' records and
    open_clip's errors pass.
    """
    return record.levelno >= logging.ERROR or not record.pathname.startswith(_OPEN_CLIP_DIR)


def load_clip(
    model_name: str,
    *,
    pretrained: str | None = None,
    checkpoint: str | Path | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    precision: str = "fp32",
) -> ClipBackbone:
    """Build an open_clip model with exact ``nn.GELU`` and load its weights.

    Exactly one weight source is used: a pretrained tag (downloaded through open_clip's hub
    cache; needs internet once), a local checkpoint file, or neither (random init, seeded).
    The model is always built from its config without QuickGELU, as APRIL-GAN's released
    linear layers were trained that way (book: ``protocol.md``, "Backbone"). When
    ``image_size`` differs from the config, the positional embedding is resized bicubic with
    antialiasing, CLS position kept (open_clip's ``resize_pos_embed``).

    Args:
        model_name: Any name in ``open_clip.list_models()`` or a registered config.
        pretrained: open_clip pretrained tag (e.g. ``"openai"``, ``"laion400m_e31"``).
        checkpoint: Path to a local checkpoint (open_clip state dict, OpenAI TorchScript, or a combined
            ``{"clip": ..., "linear": ...}`` one, whose ``"clip"`` part is read).
        image_size: Square input side; defaults to the config's.
        device: ``"cpu"``, ``"cuda"`` or a torch device.
        seed: Seed of the random initialisation.
        precision: ``"fp32"``; ``"fp16"`` or ``"bf16"`` autocast on CUDA only.

    Raises:
        ValueError: Unknown model name, or both weight sources given.
        CheckpointError: A checkpoint that is empty, unreadable, not a state dict, or whose keys or shapes
            do not fit the model (a ``ValueError``; the message names the file).
        FileNotFoundError: The checkpoint path does not exist.
    """
    if model_name not in open_clip.list_models():
        raise ValueError(f"model_name: unknown open_clip model {model_name!r}; see open_clip.list_models()")
    if pretrained and checkpoint:
        raise ValueError("give either pretrained or checkpoint, not both")
    check_precision(precision, device)
    if pretrained:
        cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        if not cfg:
            raise ValueError(f"pretrained: no tag {pretrained!r} for {model_name!r}")
        checkpoint = open_clip.download_pretrained(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        root = logging.getLogger()
        root.addFilter(_quiet_open_clip)
        try:
            model = open_clip.create_model(model_name, force_image_size=image_size)
        finally:
            root.removeFilter(_quiet_open_clip)
    weights, weights_id = f"random-init seed {seed}", None
    if checkpoint is not None:
        path = Path(checkpoint)
        state = _clip_state_dict(path)
        resize_pos_embed(state, model)
        load_state_dict(model, state, path, "checkpoint", model_name)
        if pretrained:
            weights = f"pretrained:{pretrained}"
        else:
            weights, weights_id = provenance(path), f"checkpoint {file_fingerprint(path)}"
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    device = torch.device(device)
    return ClipBackbone(
        model=model.eval().to(device),
        tokenizer=get_tokenizer(model_name),
        model_name=model_name,
        weights=weights,
        image_size=int(size),
        device=device,
        precision=precision,
        weights_id=weights_id,
    )
