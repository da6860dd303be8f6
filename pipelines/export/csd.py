"""A store's feature set written back as a CMU-MultimodalSDK computational sequence (.csd), atomically.

The layout and metadata keys are the release's (`pipelines.csd` reads them); `write_csd` streams rows from the
store one record batch at a time.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from feature_schemas import atomic_path

from ..csd import SDK_METADATA_KEYS
from ..errors import PipelineError


def _meta_text(value: Any) -> str:
    return json.dumps(value)


def write_sequence(
    out_path: str | os.PathLike,
    root_name: str,
    entries: Iterator[tuple[str, np.ndarray, np.ndarray]],
    metadata: dict[str, Any],
) -> Path:
    """Write (id, features, intervals) entries as a .csd in the SDK's layout, atomically.

    Metadata values are stored as JSON text in one-element string datasets, as the release does; every key
    the SDK's `deploy()` needs is filled so nothing prompts."""
    out = Path(out_path)
    meta = {k: "" for k in SDK_METADATA_KEYS}
    meta.update(metadata)
    meta["root name"] = root_name
    meta.setdefault("uuid", str(uuid.uuid4()))
    meta.setdefault("md5", None)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        root = f.create_group(root_name)
        data = root.create_group("data")
        for key, feats, ivs in entries:
            if not key or "/" in key or key in (".", "..") or re.search(r"[\x00-\x1f\x7f]", key):
                raise PipelineError(f"{out}: entry id {key!r} cannot be an HDF5 group name (path separator, '.', "
                                    "'..' or control characters)", "write", item_id=key, source_path=str(out))
            g = data.create_group(key)
            g.create_dataset("features", data=feats)
            g.create_dataset("intervals", data=np.asarray(ivs, np.float64).reshape(-1, 2))
        mg = root.create_group("metadata")
        for key, value in meta.items():
            ds = mg.create_dataset(key, (1,), dtype=h5py.string_dtype())
            ds[0] = _meta_text(value)
    return out


def write_csd(
    store: str | os.PathLike,
    feature_set: str,
    out_path: str | os.PathLike,
    level: str = "word",
    split: str | None = None,
) -> Path:
    """Write one feature set of a store as a computational sequence readable by the SDK.

    level="word": one entry per segment (`video_id[i]`, the SDK's key after aligning to labels), one row per
    word with the word's interval and its collapsed vector (words no frame covered keep the store's fill).
    level="frame": one entry per segment with its frames as extracted (needs a store built with frames).
    Rows are streamed from the store, one record batch at a time."""
    from feature_schemas import Store, StoreError, column_lists, column_vectors

    st = Store(store)
    if feature_set not in st.feature_sets:
        raise StoreError(f"{st.path}: no feature set {feature_set!r} (has: {', '.join(st.feature_sets) or 'none'})")
    fs = st.feature_sets[feature_set]
    if level == "word":
        if feature_set not in st.aligned_sets():
            raise StoreError(f"{st.path}: {feature_set!r} has no word-aligned columns")
        table = "aligned"
        cols = ["segment_id", "word_start", "word_end", feature_set]
        start_col, end_col, value_col = "word_start", "word_end", feature_set
    elif level == "frame":
        if feature_set not in st.frame_sets():
            raise StoreError(f"{st.path}: no frame-level table for {feature_set!r}; build with keep_frames=True")
        table = f"frames/{feature_set}"
        cols = ["segment_id", "frame_start", "frame_end", "values"]
        start_col, end_col, value_col = "frame_start", "frame_end", "values"
    else:
        raise ValueError(f"level must be 'word' or 'frame', not {level!r}")

    def entries() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for batch in st.iter_batches(table, split=split, columns=cols, batch_size=64):
            starts = column_lists(batch.column(start_col), np.float64)  # nulls (untimed words) -> NaN
            ends = column_lists(batch.column(end_col), np.float64)
            values = column_vectors(batch.column(value_col))
            for sid, s, e, v in zip(batch.column("segment_id").to_pylist(), starts, ends, values, strict=True):
                yield sid, v.astype(np.float32, copy=False), np.stack([s, e], axis=1).reshape(-1, 2)

    m = st.manifest
    metadata = {
        "computational sequence description": fs.description or f"{fs.extractor} features ({level} level) from an mmolre store",
        "computational sequence version": "1.0",
        "alignment compatible": True,
        "dataset name": m.name,
        "dataset version": str(m.schema_version),
        "creator": "mmolre",
        "contact": "",
        "featureset bib citation": str(fs.config.get("featureset bib citation", "")),
        "dataset bib citation": str(m.build.get("dataset bib citation", "")),
        "dimension names": list(fs.dims),
        "extractor": fs.extractor,
        "level": level,
    }
    return write_sequence(out_path, feature_set, entries(), metadata)
