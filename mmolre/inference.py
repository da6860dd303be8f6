"""Using a finished run: load it, evaluate it on a split of any compatible store, explain one segment's prediction."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from feature_schemas import Store, StoreError, coverage_column
from feature_schemas.manifest import read_manifest
from feature_schemas.storage import display, is_url

from .baselines import legacy_name, model_tasks
from .checkpoint import load_checkpoint, load_weights
from .config import TrainConfig
from .context import wrap_in_context
from .data import StoreDataset
from .distributed import resolve_device
from .errors import RunError
from .evaluation import predict_split, score, task_predictions
from .models.contract import ModelOutput, assemble_model
from .registry import config_from_dict
from .text_encoder import (
    TOKENIZER_DIR,
    FinetunedText,
    encode_words,
    load_encoder,
    load_tokenizer,
    token_limit,
)

Run = tuple[nn.Module, TrainConfig, dict[str, Any]]


def load_run(run: str | Path, device: str | torch.device = "cpu") -> Run:
    """(model in eval mode with the best weights, its TrainConfig, meta: model_name, arch, tasks, feature_sets, store, epoch)."""
    run = Path(run)
    path = run / "best.pt"
    if not run.is_dir():
        raise RunError(f"{run}: no such run directory (no best.pt); give --run the --out folder of `mmolre train`")
    if not path.is_file():
        raise RunError(f"{run}: no best.pt; is this a finished training run directory?")
    ck = load_checkpoint(path, map_location="cpu")
    try:
        # legacy single-task names (single_emotion) are mmolre on one task; the arch records that task
        name, _ = legacy_name(ck["model_name"])
        arch = model_tasks(ck["model_name"], config_from_dict(name, ck["arch"], source=str(path)))
        config = TrainConfig.from_dict(ck["config"], source=str(path))
        # a context run's weights are those of the model inside its video-context wrapper
        model = wrap_in_context(name, arch, config.context_hidden) if config.context else assemble_model(name, arch)
        meta = {"feature_sets": list(ck["feature_sets"]), "store": ck["store"], "epoch": ck["epoch"],
                "max_len": ck["max_len"], "truncate": ck["truncate"]}
    except KeyError as e:
        raise RunError(f"{path}: not a complete mmolre checkpoint (no {e}); was it written by `mmolre train`?") from None
    except (RuntimeError, TypeError, ValueError) as e:
        raise RunError(f"{path}: incompatible checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    meta["dataset_kwargs"] = {}
    if config.text_encoder == "finetune":  # the fine-tuned encoder: architecture from RUN/tokenizer, weights from best.pt
        folder = run / TOKENIZER_DIR
        if not (folder / "config.json").is_file():
            raise RunError(f"{folder}: missing; a run with text_encoder=finetune keeps its tokenizer and encoder config there")
        tokenizer, text_set = load_tokenizer(folder), str(ck.get("text_set") or "")
        encoder = load_encoder(folder, pretrained=False)
        model = FinetunedText(model, encoder, text_set)
        meta["dataset_kwargs"] = {"tokenizer": tokenizer, "text_set": text_set,
                                  "max_tokens": token_limit(encoder, config.max_tokens)}
    load_weights(model, ck["model"], path)
    model.to(device).eval()
    meta = {"model_name": ck["model_name"], "arch": ck["arch"], "tasks": [t.to_dict() for t in arch.tasks], **meta,
            "run": str(run)}
    return model, config, meta


def run_summary(run: str | Path) -> dict[str, Any]:
    """What a run is, for users to check before trusting its numbers: model, best epoch, the store it learnt from
    (path and manifest sha256) and how many segments its test split scored (`test_n`, 0 when it was not tested).
    Read from results.json, falling back to best.pt for runs that have none."""
    run = Path(run)
    results_path = run / "results.json"
    results: dict[str, Any] = {}
    if results_path.is_file():
        try:
            results = json.loads(results_path.read_text())
        except (OSError, ValueError) as e:
            raise RunError(f"{results_path}: unreadable ({e})") from None
    store = results.get("store")
    if isinstance(store, dict):
        path, sha = store.get("path"), store.get("manifest_sha256")
    else:
        path, sha = store, None
    if path is None or not results:
        meta = load_run(run)[2]
        path = path or meta["store"]
        results.setdefault("model", meta["model_name"])
        results.setdefault("best_epoch", meta["epoch"])
    test = results.get("test") or {}
    ns = [m.get("n") for name, m in test.items() if name != "overall" and isinstance(m, dict) and isinstance(m.get("n"), int)]
    return {"run": str(run), "model": results.get("model"), "best_epoch": results.get("best_epoch"),
            "store": str(path), "store_sha256": sha, "test_n": max(ns) if ns else 0}


def _shown(path: Any) -> str:
    """A path as a terminal may show it: control characters escaped (repr-style), as docs/contracts.md asks."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def describe_run(info: dict[str, Any], store: str | Path | None = None) -> str:
    """One line naming the run, the store used (the run's own unless `store`) and the run's test n."""
    used = store if store is not None else info["store"]
    own = store is None or _same_store(used, info["store"])
    sha = info.get("store_sha256")
    if own and sha and (now := _manifest_sha256(used)) is not None and now != sha:
        own_text = f"the run's training store, CHANGED since training (manifest sha256 was {sha[:12]})"
    else:
        own_text = "the run's training store" if own else f"not the run's training store {_shown(info['store'])}"
    tested = f"tested on {info['test_n']} segments" if info["test_n"] else "not tested (no test split)"
    return (f"run {_shown(info['run'])} ({info['model']}, best epoch {info['best_epoch']}); "
            f"store {_shown(display(used))} ({own_text}); {tested}")


def _same_store(a: str | Path, b: str | Path) -> bool:
    """Whether two store locations name the same store (URLs compared as shown, paths resolved)."""
    if is_url(a) or is_url(b):
        return display(a).rstrip("/") == display(b).rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def _manifest_sha256(store: str | Path) -> str | None:
    """The sha256 of a store's manifest now, None when it cannot be read (describe_run only informs)."""
    try:
        return hashlib.sha256(read_manifest(store)[0]).hexdigest()
    except (StoreError, OSError):
        return None


def evaluate(run: str | Path, split: str = "test", store: str | Path | None = None, device: str = "auto") -> dict[str, Any]:
    """Metrics of a run's best checkpoint on one split of `store` (default: the store it was trained on)."""
    dev = resolve_device(device)
    model, config, meta = load_run(run, dev)
    store = store or meta["store"]
    store = store if is_url(store) else Path(store)
    s = Store(store)
    missing = [m for m in meta["feature_sets"] if m not in s.aligned_sets() + s.utterance_sets()]
    if missing:
        raise StoreError(f"{s.location}: lacks the feature set(s) {', '.join(missing)} the run {run} was trained on")
    for m in meta["feature_sets"]:
        if m == meta["dataset_kwargs"].get("text_set"):
            continue  # read as words by the run's own encoder
        if s.feature_sets[m].dim != meta["arch"]["input_dims"][m]:
            raise StoreError(f"{s.location}: feature set {m!r} has {s.feature_sets[m].dim} dims, the run expects {meta['arch']['input_dims'][m]}")
    ds = StoreDataset(store, split, meta["feature_sets"], model.config.tasks, meta["max_len"], meta["truncate"], **meta["dataset_kwargs"])
    preds = predict_split(model, ds, dev, max(64, config.batch_size), 0, config.amp, config.sentiment_loss)
    return {"run": str(run), "store": s.location, "store_manifest_sha256": s.manifest_sha256,
            "split": split, "n": len(preds["segment_id"]), "metrics": score(preds)}


def predict_segment(run: str | Path | Run, words_features: dict[str, np.ndarray]) -> dict[str, Any]:
    """Predict one segment from its word-aligned features and say which words drove each task.

    `words_features[set]` is (W, D) per feature set the run uses, optionally with `set + "__coverage"` (W,).
    An utterance-level set is one (D,) vector (a one-step sequence; `set + "__present"` False masks it).
    A missing set counts as a modality with no usable word. Returns sentiment and emotions, and per task the
    modality weights, each modality's attention over words, and `word_contribution` (their product summed over
    modalities: how much each of the W words fed the pooled representation; 0 for words cut by max_len).
    A run with a fine-tuned text encoder reads the text set's words instead: `words_features["words"]` (the
    words as written, W of them); the text set's vectors, if given, are ignored."""
    model, config, meta = load_run(run) if isinstance(run, (str, Path)) else run
    if config.context:  # its model reads whole videos, not one segment
        raise RunError("predict_segment: this run was trained with context (each utterance sees its video's others); "
                       "score it with `mmolre evaluate`, which batches whole videos")
    seg = _segment_inputs(words_features, meta, next(model.parameters()).device)
    with torch.no_grad():
        out = model(seg.x, seg.mask)
    return _explained(model, out, meta["feature_sets"], seg)


@dataclass
class _SegmentInputs:
    """One segment as the model reads it (a batch of one), and which of its words it kept."""

    x: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]
    n_words: int
    keep: np.ndarray  # indices of the words within max_len
    utterance: set[str]  # the sets given as one vector per segment


def _segment_inputs(words_features: dict[str, np.ndarray], meta: dict[str, Any], device: torch.device) -> _SegmentInputs:
    """Check the given sets against the run's (dims, one word count), cut to max_len as training did, and
    tokenize the words for a fine-tuned text encoder."""
    sets = meta["feature_sets"]
    dims = meta["arch"]["input_dims"]
    text = meta.get("dataset_kwargs") or {}
    text_set = text.get("text_set")
    written: list[str] = []
    if text_set:
        if "words" not in words_features:
            raise ValueError("predict_segment: this run fine-tunes its text encoder and needs the segment's words (key 'words')")
        words_features = dict(words_features)
        written = [str(w) for w in words_features["words"]]
        cov = np.asarray(words_features.get(coverage_column(text_set), np.ones(len(written))), np.float32)
        words_features[text_set] = np.zeros((len(written), dims[text_set]), np.float32)  # filled by the encoder
        words_features[coverage_column(text_set)] = cov
    utterance = {m for m in sets if m in words_features and np.asarray(words_features[m]).ndim == 1}
    lengths = {len(np.asarray(words_features[m])) for m in sets if m in words_features and m not in utterance}
    if utterance and not lengths:
        lengths = {1}
    if not lengths:
        raise ValueError(f"predict_segment: none of the run's feature sets ({', '.join(sets)}) given")
    if len(lengths) > 1:
        raise ValueError(f"predict_segment: feature sets disagree on the number of words ({sorted(lengths)}); they must be word-aligned")
    W = lengths.pop()
    keep = np.arange(W)
    max_len = meta["max_len"]
    if max_len is not None and W > max_len:
        keep = keep[:max_len] if meta["truncate"] == "right" else keep[W - max_len :]
    T = max(1, len(keep))
    x, mask = {}, {}
    for m in sets:
        if m in utterance:  # a one-step sequence, as in training
            vec = np.asarray(words_features[m], np.float32)
            if vec.shape != (dims[m],):
                raise ValueError(f"predict_segment: {m!r} must be ({dims[m]},), got {vec.shape}")
            ok = bool(words_features.get(f"{m}__present", True)) and bool(np.isfinite(vec).all())
            x[m] = torch.from_numpy(np.nan_to_num(vec))[None, None].to(device)
            mask[m] = torch.tensor([[ok]], device=device)
            continue
        v = np.zeros((T, dims[m]), np.float32)
        c = np.zeros(T, bool)
        if m in words_features:
            arr = np.asarray(words_features[m], np.float32)
            if arr.ndim != 2 or arr.shape[1] != dims[m]:
                raise ValueError(f"predict_segment: {m!r} must be (words, {dims[m]}), got {arr.shape}")
            cov = np.asarray(words_features.get(coverage_column(m), np.ones(W)), np.float32)
            v[: len(keep)] = np.nan_to_num(arr[keep])
            c[: len(keep)] = (cov[keep] > 0) & np.isfinite(arr[keep]).all(axis=1)
        x[m] = torch.from_numpy(v)[None].to(device)
        mask[m] = torch.from_numpy(c)[None].to(device)
    if text_set:
        ids, wids = encode_words(text["tokenizer"], [written[i] for i in keep], text["max_tokens"])
        x["__input_ids"] = torch.from_numpy(ids)[None].to(device)
        x["__attention_mask"] = torch.ones_like(x["__input_ids"])
        x["__word_ids"] = torch.from_numpy(wids)[None].to(device)
    return _SegmentInputs(x, mask, W, keep, utterance)


def _explained(model: nn.Module, out: ModelOutput, sets: list[str], seg: _SegmentInputs) -> dict[str, Any]:
    """The predictions, and per task the modality weights, word weights and each word's contribution."""
    W, keep = seg.n_words, seg.keep
    result: dict[str, Any] = {"words": W, "used_words": keep.tolist(), "tasks": {}}
    for t in model.config.tasks:
        p = task_predictions(t, out.outputs[t.name])[0]
        if t.name == "sentiment":
            if t.kind == "regression":
                result["sentiment"] = float(p)
            else:
                result["sentiment"] = t.classes[int(np.argmax(p))]
                result["sentiment_probs"] = {c: float(v) for c, v in zip(t.classes, p, strict=True)}
        else:
            result["emotions"] = {c: float(v) for c, v in zip(t.classes, p, strict=True)}
            if t.kind == "multiclass":
                result["emotion"] = t.classes[int(np.argmax(p))]
        if t.name not in out.modality_weights:  # a model without attention weights explains nothing per word
            result["tasks"][t.name] = {"modality_weights": {}, "word_weights": {}, "word_contribution": []}
            continue
        mw = out.modality_weights[t.name][0].float().cpu().numpy()
        per_word, contrib = {}, np.zeros(W)
        for j, m in enumerate(sets):
            if m in seg.utterance:  # no words to weigh: the modality weight says how much it counted
                per_word[m] = []
                continue
            w = np.zeros(W)
            w[keep] = out.word_weights[t.name][m][0, : len(keep)].float().cpu().numpy()
            per_word[m] = w.tolist()
            contrib += mw[j] * w
        result["tasks"][t.name] = {
            "modality_weights": {m: float(mw[j]) for j, m in enumerate(sets)},
            "word_weights": per_word,
            "word_contribution": contrib.tolist(),
        }
    return result
