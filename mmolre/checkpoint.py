"""Checkpoints: written atomically, read with `weights_only=True`, complete enough to resume a run exactly.

A checkpoint holds only tensors and plain Python values (random-number-generator states included), so the safe
loader accepts it and no pickled code runs when a checkpoint is opened.
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_schemas import atomic_path

from .errors import RunError


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states as tensors and plain values."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].cpu().tolist()), py["gauss"]))
    n = state["numpy"]  # a checkpoint loaded with map_location="cuda" holds these tensors on the GPU
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """torch.save to a hidden temporary beside the target, fsync, then os.replace: readers see old or new, never half."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's payload. A file holding other objects than tensors and plain values is refused, with no
    hint at loading it unsafely (torch's own message suggests exactly that)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no checkpoint")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" not in str(e).lower():
            raise RunError(f"{path}: unreadable checkpoint (not a torch checkpoint, or damaged)") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise RunError(f"{path}: refused: the checkpoint contains objects other than tensors and plain values{what}, "
                       "and loading those can run code; use a checkpoint written by `mmolre train`") from None
    except Exception as e:  # noqa: BLE001 - any other unpickling error means the file is not a usable checkpoint
        first = str(e).splitlines()[0] if str(e) else ""
        raise RunError(f"{path}: unreadable checkpoint ({type(e).__name__}: {first}); is it damaged or truncated?") from None
    if not isinstance(ck, dict):
        raise RunError(f"{path}: not an mmolre checkpoint (holds a {type(ck).__name__}, not a dict)")
    return ck


def check_inputs(path: str | Path, ck: dict[str, Any], feature_sets: list[str], input_dims: dict[str, int], store: str) -> None:
    """Refuse a checkpoint whose model reads other feature sets (or dimensions) than `store` gives, before its
    weights meet a model they do not fit."""
    theirs = {str(k): int(v) for k, v in dict(ck.get("arch", {}).get("input_dims", {})).items()}
    ours = {str(k): int(v) for k, v in input_dims.items()}
    if list(ck.get("feature_sets", theirs)) != list(feature_sets) or theirs != ours:
        raise RunError(f"{path}: run was trained on a store with other feature sets: {_sets(theirs)} "
                       f"(store {ck.get('store', '?')}), {store} gives {_sets(ours)}; use another output directory, "
                       "or --store with the run's feature sets")


def _sets(dims: dict[str, int]) -> str:
    return ", ".join(f"{k} ({v}-d)" for k, v in dims.items()) or "none"


def load_weights(module: torch.nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """`load_state_dict` whose mismatch is a RunError naming the file, not torch's multi-line RuntimeError."""
    try:
        result = module.load_state_dict(state, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        detail = ", ".join(f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in
                           (("weights missing", missing), ("unexpected weights", unexpected)) if keys)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        lines = [ln.strip().rstrip(".") for ln in str(e).splitlines() if "size mismatch" in ln] or [str(e).splitlines()[0]]
        detail = f"{len(lines)} of other shapes (e.g. {lines[0][:160]})"
    if detail:
        raise RunError(f"{path}: the weights do not fit the model: run was trained on a store with other feature sets "
                       f"or settings ({detail}); use another output directory")
