"""A BERT encoder (the packaged all-MiniLM-L6-v2) in plain torch, read without importing transformers.

Why: loading a model through transformers 5.x imports `torch.distributed.tensor`, dynamo and scipy (~4 s of a
build worker's start-up on this machine, more than the whole model's work on a typical build). This module runs
the same operations in the same order as transformers' `BertModel` with its default `sdpa` attention
(embeddings word + token type, then + position, LayerNorm; per layer: q/k/v projections,
`scaled_dot_product_attention` with a boolean key mask only when the batch is padded, dense + LayerNorm of the
residual, exact-erf GELU feed-forward, dense + LayerNorm of the residual), so its last hidden states are
bit-identical to transformers' (tests/test_text.py asserts it on real transcripts). Tokenisation is the
model's own `tokenizer.json` through the `tokenizers` library that transformers' fast tokenizer wraps.

Only plain encoder BERTs qualify (`supported`): anything else (another architecture, a decoder, relative
positions, another activation, no tokenizer.json or model.safetensors) goes through transformers as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TokenBatch:
    """A tokenised, right-padded batch: (B, T) int64 arrays and, per row, the word index of each token (None:
    a special or padding token)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    word_ids: list[list[int | None]]


def supported(path: str | Path) -> bool:
    """Whether the model folder holds a plain BERT encoder this module reproduces exactly."""
    folder = Path(path)
    if not (folder / "tokenizer.json").is_file() or not (folder / "model.safetensors").is_file():
        return False
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (cfg.get("model_type") == "bert" and cfg.get("architectures", ["BertModel"]) == ["BertModel"]
            and cfg.get("hidden_act") == "gelu" and cfg.get("position_embedding_type", "absolute") == "absolute"
            and not cfg.get("is_decoder", False) and not cfg.get("add_cross_attention", False)
            and cfg.get("chunk_size_feed_forward", 0) == 0 and cfg.get("torch_dtype", cfg.get("dtype")) in
            (None, "float32") and int(cfg["hidden_size"]) % int(cfg["num_attention_heads"]) == 0)


class WordPieceTokenizer:
    """The model's tokenizer.json, set up as transformers' fast tokenizer calls it for pre-split words."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
        pad = self._tok.token_to_id("[PAD]")
        self._tok.enable_padding(pad_id=0 if pad is None else int(pad), pad_token="[PAD]")  # to the longest row
        self._max_length: int | None = None

    def __call__(self, batch: list[list[str]], max_length: int) -> TokenBatch:
        if max_length != self._max_length:  # the special tokens count: the words are cut to leave room for them
            self._tok.enable_truncation(max_length, strategy="longest_first", direction="right")
            self._max_length = max_length
        rows = self._tok.encode_batch([list(words) for words in batch], is_pretokenized=True, add_special_tokens=True)
        width = max((len(e.ids) for e in rows), default=0)
        if any(len(e.ids) != width for e in rows):
            raise ValueError("tokenizer: rows of unequal length after padding")
        ids = np.array([e.ids for e in rows], np.int64).reshape(len(rows), width)
        mask = np.array([e.attention_mask for e in rows], np.int64).reshape(len(rows), width)
        types = np.array([e.type_ids for e in rows], np.int64).reshape(len(rows), width)
        return TokenBatch(ids, mask, types, [list(e.word_ids) for e in rows])


def load_bert(path: str | Path) -> Any:
    """The encoder as a torch module in eval mode: `module(input_ids, attention_mask, token_type_ids)` -> the last
    hidden states (B, T, D)."""
    import torch
    from safetensors.torch import load_file
    from torch import nn

    cfg = json.loads((Path(path) / "config.json").read_text())
    d, heads, eps = int(cfg["hidden_size"]), int(cfg["num_attention_heads"]), float(cfg.get("layer_norm_eps", 1e-12))
    head_dim = d // heads
    scaling = head_dim**-0.5

    # torch's layers without their random initialisation (~0.1 s for MiniLM): every weight is loaded over it
    # (strict=True). Same parameters and forward, so the state dict and the outputs are those of nn.*.
    class Linear(nn.Linear):
        def reset_parameters(self) -> None:
            pass

    class Embedding(nn.Embedding):
        def reset_parameters(self) -> None:
            pass

    class LayerNorm(nn.LayerNorm):
        def reset_parameters(self) -> None:
            pass

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = Linear(d, d), Linear(d, d), Linear(d, d)
            self.attn_out, self.attn_norm = Linear(d, d), LayerNorm(d, eps=eps)
            self.up = Linear(d, int(cfg["intermediate_size"]))
            self.down = Linear(int(cfg["intermediate_size"]), d)
            self.out_norm = LayerNorm(d, eps=eps)

        def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            shape = (*h.shape[:-1], -1, head_dim)
            q = self.q(h).view(*shape).transpose(1, 2)
            k = self.k(h).view(*shape).transpose(1, 2)
            v = self.v(h).view(*shape).transpose(1, 2)
            a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=scaling,
                                                           is_causal=False)
            a = a.reshape(a.shape[0], -1, q.shape[2], v.shape[-1]).transpose(1, 2).contiguous()
            a = a.reshape(*h.shape[:-1], -1).contiguous()
            h = self.attn_norm(self.attn_out(a) + h)
            return self.out_norm(self.down(nn.functional.gelu(self.up(h))) + h)

    class Bert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word = Embedding(int(cfg["vocab_size"]), d, padding_idx=cfg.get("pad_token_id", 0))
            self.position = Embedding(int(cfg["max_position_embeddings"]), d)
            self.token_type = Embedding(int(cfg.get("type_vocab_size", 2)), d)
            self.norm = LayerNorm(d, eps=eps)
            self.layers = nn.ModuleList(Layer() for _ in range(int(cfg["num_hidden_layers"])))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            n = input_ids.shape[1]
            positions = torch.arange(n, dtype=torch.long).unsqueeze(0)
            h = self.word(input_ids) + self.token_type(token_type_ids)
            h = self.norm(h + self.position(positions))
            mask = None  # as transformers: no mask at all when no token is padding
            if not bool(attention_mask.all()):
                keys = attention_mask.bool()[:, None, None, :]
                mask = keys.expand(input_ids.shape[0], 1, n, n).contiguous()
            for layer in self.layers:
                h = layer(h, mask)
            return h

    model = Bert()
    weights = load_file(str(Path(path) / "model.safetensors"))
    model.load_state_dict(_rename(weights, int(cfg["num_hidden_layers"])), strict=True, assign=True)
    return model.eval()


def _rename(weights: dict[str, Any], layers: int) -> dict[str, Any]:
    """transformers' parameter names (with or without the `bert.` prefix) -> this module's; the pooler is unused."""
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    names = {"embeddings.word_embeddings.weight": "word.weight",
             "embeddings.position_embeddings.weight": "position.weight",
             "embeddings.token_type_embeddings.weight": "token_type.weight",
             "embeddings.LayerNorm.weight": "norm.weight", "embeddings.LayerNorm.bias": "norm.bias"}
    parts = {"attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
             "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
             "intermediate.dense": "up", "output.dense": "down", "output.LayerNorm": "out_norm"}
    for i in range(layers):
        for src, dst in parts.items():
            for p in ("weight", "bias"):
                names[f"encoder.layer.{i}.{src}.{p}"] = f"layers.{i}.{dst}.{p}"
    out = {}
    for k, v in weights.items():
        if k in names:
            out[names[k]] = v
        elif not k.startswith("pooler.") and not k.endswith("position_ids"):
            out[k] = v  # unknown: load_state_dict(strict=True) names it
    return out
