"""Tiny CMU-MOSEI-shaped .csd files written by the SDK's own writer (`mmsdk`), so tests and benchmarks read the real
format (here in bench/, which imports no tests, and the tests import it).

Every metadata key is set, so the SDK's `deploy()` never prompts. The videos use real ids from the standard
MOSEI folds (two train, one test) plus one labelled video in no fold; FACET lacks the test video; COVAREP
holds -inf values; the words carry `sp` silence tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.csd import COVAREP_DIMS, SDK_METADATA_KEYS

TRAIN_A = "-3g5yACwYnA"
TRAIN_B = "-3nNcZdcdvU"
TEST_C = "-6rXp3zJ3kc"
NO_FOLD = "zz_not_in_any_fold"
VIDEOS = (TRAIN_A, TRAIN_B, TEST_C, NO_FOLD)
DURATION = 8.0  # seconds of features per video

# Segments (label intervals) per video, in file order.
SEGMENTS = {
    TRAIN_A: [(0.5, 3.0), (3.0, 6.0)],
    TRAIN_B: [(1.0, 4.0)],
    TEST_C: [(0.0, 2.0), (2.5, 5.0)],
    NO_FOLD: [(0.0, 3.0)],
}
# Tokens per video with their times; "sp" is silence.
TOKENS = {
    TRAIN_A: [("sp", 0.5, 1.0), ("hello", 1.0, 1.5), ("world", 1.5, 2.2), ("sp", 2.2, 3.1), ("this", 3.1, 3.4),
              ("is", 3.4, 3.6), ("fine", 3.6, 4.2)],
    TRAIN_B: [("good", 1.2, 1.6), ("sil", 1.6, 2.0), ("movie", 2.0, 2.5)],
    TEST_C: [("bad", 0.2, 0.6), ("acting", 0.6, 1.1), ("really", 2.6, 3.0)],
    NO_FOLD: [("ok", 0.5, 0.9)],
}
COVAREP_INF = {TRAIN_A: [(120, 0), (400, 3)], TEST_C: [(50, 1)]}  # (frame, dim) set to -inf
COVAREP_HZ = 100
FACET_HZ = 30


def _metadata(root: str, dims: list[str]) -> dict[str, str]:
    meta = {k: f"test {k}" for k in SDK_METADATA_KEYS}
    meta.update({
        "root name": root,
        "computational sequence version": "1.0",
        "alignment compatible": "true",
        "dataset name": "CMU-MOSEI",
        "dataset version": "1.0",
        "dimension names": dims,
    })
    return meta


def _deploy(path: Path, root: str, data: dict[str, dict[str, np.ndarray]], dims: list[str]) -> Path:
    from mmsdk import mmdatasdk

    seq = mmdatasdk.computational_sequence(root)
    seq.setData(data, root)
    seq.setMetadata(_metadata(root, dims), root)
    seq.deploy(str(path))
    return path


def covarep_values(video: str) -> tuple[np.ndarray, np.ndarray]:
    """(intervals, values) of the COVAREP fixture for one video: deterministic, with the -inf cells."""
    n = int(DURATION * COVAREP_HZ)
    k = np.arange(n)
    ivs = np.stack([k / COVAREP_HZ, (k + 1) / COVAREP_HZ], axis=1)
    seed = sum(map(ord, video))
    vals = np.random.default_rng(seed).normal(size=(n, 74)).astype(np.float32)
    for frame, dim in COVAREP_INF.get(video, []):
        vals[frame, dim] = -np.inf
    return ivs, vals


def glove_vector(word: str) -> np.ndarray:
    return np.random.default_rng(sum(map(ord, word))).normal(size=300).astype(np.float32)


def write_mosei_fixture(folder: Path) -> dict[str, Path]:
    """Write labels, words, COVAREP, FACET and GloVe sequences into `folder`; returns their paths by role."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    labels = {}
    for v, segs in SEGMENTS.items():
        rng = np.random.default_rng(sum(map(ord, v)) + 1)
        vals = np.column_stack([rng.uniform(-3, 3, len(segs)), rng.uniform(0, 3, (len(segs), 6))])
        labels[v] = {"features": vals.astype(np.float32), "intervals": np.array(segs, np.float64)}
    paths["labels"] = _deploy(folder / "CMU_MOSEI_Labels.csd", "All Labels", labels,
                              ["sentiment", "happy", "sad", "anger", "surprise", "disgust", "fear"])
    words = {
        v: {"features": np.array([[t.encode()] for t, _, _ in toks]), "intervals": np.array([[s, e] for _, s, e in toks])}
        for v, toks in TOKENS.items()
    }
    paths["words"] = _deploy(folder / "CMU_MOSEI_TimestampedWords.csd", "words", words, ["word"])
    cov = {}
    for v in VIDEOS:
        ivs, vals = covarep_values(v)
        cov[v] = {"features": vals, "intervals": ivs}
    paths["covarep"] = _deploy(folder / "CMU_MOSEI_COVAREP.csd", "COVAREP", cov, list(COVAREP_DIMS))
    facet = {}
    for v in VIDEOS:
        if v == TEST_C:
            continue  # an id missing from one sequence
        n = int(DURATION * FACET_HZ)
        k = np.arange(n)
        facet[v] = {"features": np.full((n, 35), 0.5, np.float32) + k[:, None] / n,
                    "intervals": np.stack([k / FACET_HZ, (k + 1) / FACET_HZ], axis=1)}
    # The release's FACET file has no usable dimension names: give a wrong-length list.
    paths["facet42"] = _deploy(folder / "CMU_MOSEI_VisualFacet42.csd", "FACET 4.2", facet, ["only", "three", "names"])
    glove = {}
    for v, toks in TOKENS.items():
        kept = [(t, s, e) for t, s, e in toks if t not in ("sp", "sil")]
        glove[v] = {"features": np.stack([glove_vector(t) for t, _, _ in kept]),
                    "intervals": np.array([[s, e] for _, s, e in kept])}
    paths["glove"] = _deploy(folder / "CMU_MOSEI_TimestampedGloveVectors.csd", "glove_vectors", glove,
                             [f"glove_{i}" for i in range(300)])
    return paths


def damage_entry(path: Path, video: str, rows: dict[int, tuple[float, float]] | None = None,
                 features: np.ndarray | None = None) -> None:
    """Overwrite one entry of a written .csd in place: some rows' intervals, or its whole features dataset (the
    release's damaged files: NaN or reversed intervals, a frame spanning everything, numbers for words)."""
    import h5py

    with h5py.File(path, "r+") as f:
        root = next(k for k in f.keys() if "data" in f[k])
        entry = f[root]["data"][video]
        if rows:
            ivs = entry["intervals"][()]
            for i, (s, e) in rows.items():
                ivs[i] = (s, e)
            entry["intervals"][...] = ivs
        if features is not None:
            del entry["features"]
            entry.create_dataset("features", data=features)


def write_wide_covarep(path: Path, videos: int, rows: int, seed: int = 0) -> Path:
    """A COVAREP-shaped computational sequence of `videos` entries of `rows` random 74-d frames at 100 Hz, written
    straight with h5py (no metadata beyond the group: for byte-range and size experiments, not for the SDK)."""
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        data = f.create_group("COVAREP/data")
        f.create_group("COVAREP/metadata")
        for i in range(videos):
            entry = data.create_group(f"video{i:03d}")
            entry.create_dataset("features", data=rng.normal(size=(rows, 74)).astype(np.float32))
            entry.create_dataset("intervals", data=np.stack([np.arange(rows) / 100, np.arange(1, rows + 1) / 100], 1))
    return path
