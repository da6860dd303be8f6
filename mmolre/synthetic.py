"""Synthetic feature stores with a learnable signal, written straight with pyarrow by the store contract.

For tests, benchmarks and smoke runs where real features are not at hand: each segment has a hidden "affect"
vector; its words carry noisy projections of it in every modality (some words uncovered, as a missing face
would leave them), and its labels are functions of it, so a working model learns and a broken one does not.
`labels` picks the label layout: "mosei" (sentiment in [-3, 3] + six emotion intensities), "mosi" (sentiment
only) or "meld" (sentiment and emotion classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feature_schemas import (
    EMOTION_CLASS_SETS,
    EMOTIONS,
    MELD_EMOTION_CLASSES,
    SENTIMENT_CLASSES,
    FeatureSet,
    FileEntry,
    Manifest,
    aligned_schema,
    coverage_column,
    labels_record,
    list_of_vectors,
    segments_schema,
    sha256_file,
    table_path,
)

MODALITY_OF = {"text": "text", "audio": "audio", "visual": "visual"}


@dataclass
class SyntheticSpec:
    sizes: Mapping[str, int] = field(default_factory=lambda: {"train": 96, "valid": 32, "test": 32})
    dims: Mapping[str, int] = field(default_factory=lambda: {"text": 16, "audio": 8})  # feature set -> D
    labels: str = "mosei"  # mosei | mosi | meld
    words: tuple[int, int] = (3, 12)  # min, max words per segment
    rows_per_shard: int = 32
    row_group_rows: int = 16
    uncovered: float = 0.15  # fraction of non-text words with coverage 0
    noise: float = 1.0
    latent: int = 4
    seed: int = 0
    placeholder_words: bool = False  # words "<w0>", "<w1>"..., as an MMSA import without words has
    words_written: bool = True  # schema 2.1's optional column; False: a 2.0-style store without it


def _labels(z: np.ndarray, kind: str, rng: np.random.Generator) -> dict[str, list]:
    n = len(z)
    s = np.tanh(z[:, 0] + 0.5 * z[:, 1]) * 3.0
    s = np.round(s * 3) / 3  # annotator averages come in thirds
    s[rng.random(n) < 0.05] = 0.0  # some exact zeros, as MOSI/MOSEI have
    out: dict[str, list] = {k: [None] * n for k in ("sentiment", *EMOTIONS, "sentiment_class", "emotion_class")}
    if kind in ("mosei", "mosi"):
        out["sentiment"] = s.astype(np.float32).tolist()
    if kind == "mosei":
        for j, e in enumerate(EMOTIONS):
            v = z[:, (j % (z.shape[1] - 1)) + 1] * (1 if j % 2 else -1) + 0.3 * z[:, 0]
            out[e] = np.clip(np.round(np.maximum(v - 0.2, 0) * 3) / 3, 0, 3).astype(np.float32).tolist()
    if kind == "meld":
        out["sentiment_class"] = [SENTIMENT_CLASSES[i] for i in np.digitize(s, [-0.5, 0.5])]
        emo = np.argmax(z[:, :4] @ np.array([[1, 0, -1, 0, 0.5, 0, 0], [0, 1, 0, -1, 0, 0.5, 0], [0, 0, 1, 0, -1, 0, 0.5], [1, -1, 0, 0, 0, 0, 0]], np.float64) + 0.3 * rng.standard_normal((n, 7)), axis=1)
        out["emotion_class"] = [MELD_EMOTION_CLASSES[i] for i in emo]
    return out


def write_synthetic_store(path: str | Path, spec: SyntheticSpec | None = None, name: str = "synthetic") -> Path:
    """Write a complete, valid store (segments, aligned, manifest) and return its path."""
    spec = spec or SyntheticSpec()
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    proj = {m: rng.standard_normal((spec.latent, d)).astype(np.float32) for m, d in spec.dims.items()}
    offset = {m: rng.standard_normal(d).astype(np.float32) * 2 for m, d in spec.dims.items()}
    scale = {m: np.exp(rng.uniform(-1, 2, d)).astype(np.float32) for m, d in spec.dims.items()}  # unnormalised, like COVAREP
    files: dict[str, FileEntry] = {}
    a_schema = aligned_schema(dict(spec.dims), with_optional=spec.words_written)
    form = "<w{}>" if spec.placeholder_words else "w{}"
    counter = 0
    for split, n in spec.sizes.items():
        for shard_i, start in enumerate(range(0, n, spec.rows_per_shard)):
            rows = min(spec.rows_per_shard, n - start)
            z = rng.standard_normal((rows, spec.latent))
            ids = [f"syn{counter + i:06d}" for i in range(rows)]
            counter += rows
            n_words = rng.integers(spec.words[0], spec.words[1] + 1, rows)
            labels = _labels(z, spec.labels, rng)
            seg = {
                "segment_id": ids,
                "video_id": [f"vid{int(i[3:]) // 4:05d}" for i in ids],
                "split": [split] * rows,
                "start": [0.0] * rows,
                "end": [float(w) * 0.4 for w in n_words],
                "transcript": [" ".join(f"w{j}" for j in range(w)) for w in n_words],
                **labels,
                "source": ["synthetic"] * rows,
                "source_path": [None] * rows,
            }
            cols: dict[str, object] = {
                "segment_id": ids,
                "split": [split] * rows,
                "words": [[form.format(j) for j in range(w)] for w in n_words],
                "word_start": [(np.arange(w) * 0.4).tolist() for w in n_words],
                "word_end": [(np.arange(w) * 0.4 + 0.35).tolist() for w in n_words],
                "word_confidence": [[1.0] * w for w in n_words],
                "align_method": ["given"] * rows,
            }
            if spec.words_written:  # schema 2.1: the words as written, punctuation kept
                cols["words_written"] = [[form.format(j) + ("." if j == w - 1 else "") for j in range(w)] for w in n_words]
            for m, d in spec.dims.items():
                vecs, covs = [], []
                for i, w in enumerate(n_words):
                    carries = rng.random(w) < 0.6  # the words that carry the segment's affect
                    v = rng.standard_normal((w, d)).astype(np.float32) * spec.noise + carries[:, None] * (z[i] @ proj[m])
                    v = v * scale[m] + offset[m]
                    cov = np.ones(w, np.float32)
                    if not m.startswith("text"):
                        cov = np.where(rng.random(w) < spec.uncovered, 0.0, rng.uniform(0.5, 1.0, w)).astype(np.float32)
                        v[cov == 0] = 0.0
                    vecs.append(v)
                    covs.append(cov)
                cols[m] = list_of_vectors(vecs, d)
                cols[coverage_column(m)] = pa.array([c.tolist() for c in covs], pa.list_(pa.float32()))
            shard = f"{shard_i:05d}"
            for table, tbl in (
                ("segments", pa.Table.from_pydict(seg, schema=segments_schema())),
                ("aligned", pa.Table.from_pydict(cols, schema=a_schema)),
            ):
                rel = table_path(table, split=split, shard=shard)
                out = root / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(tbl, out, row_group_size=spec.row_group_rows)
                files[rel] = FileEntry(table=table, split=split, shard=shard, rows=rows, sha256=sha256_file(out))
    feature_sets = {m: FeatureSet(name=m, dims=tuple(f"{m}_{j}" for j in range(d)), modality=MODALITY_OF.get(m.split("_")[0], "audio"),
                                  extractor="synthetic", description="synthetic features with a learnable signal")
                    for m, d in spec.dims.items()}
    build = {"recipe": "synthetic", "labels": spec.labels, "sizes": dict(spec.sizes), "seed": spec.seed}
    emotion_set = EMOTION_CLASS_SETS["meld"] if spec.labels == "meld" else None
    Manifest(name=name, feature_sets=feature_sets, files=files, build=build, labels=labels_record(emotion_set)).save(root)
    return root
