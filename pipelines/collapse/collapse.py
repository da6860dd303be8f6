"""Collapse frame-level features to one vector per word in linear time: O(frames + words + overlaps) per segment.

CMU-MultimodalSDK's `mmdataset.align` compares every word with every frame of its video (O(words x frames),
days and tens of GB on MOSEI) and lets NaN/-inf through. Here frames are sorted once, each word finds a
contiguous run of candidate frames by `searchsorted` (on starts, and on the running maximum of ends), and
a compiled loop (`pipelines.collapse.kernels`, numba) walks each word's run once: the SDK's overlap test,
then float64 sums (or max, or the two passes of std) straight from the stored float32 values, each frame's
finiteness checked the first time it is read. No Python loop over words or frames, no (word, frame) pair
arrays, no float64 copy of the features: the frames are read about once, which is what bounds the time.
The candidate runs hold only the overlapping frames plus the frames inside a longer earlier frame's span,
so the cost is O(N log N + W log N + overlaps) for ordinary frame streams (O(N + W log N) when sorted).

Which frames count for a word (every mode uses the same frame set)
------------------------------------------------------------------
Taken from the SDK 0.0.6 source (`mmdatasdk/dataset/dataset.py`, `align` and `__intersect_and_copy`), with
its epsilon `EPSILON = 10e-4` (= 0.001 s, not 1e-4). For a word [r0, r1] and a frame [s0, s1] the SDK keeps
the frame iff all three hold::

    r1 - s0 > -EPSILON   and   s1 - r0 > -EPSILON   and   |min(s1, r1) - max(s0, r0)| > EPSILON

For well-formed intervals (s0 <= s1, r0 <= r1) this is exactly "the overlap min(s1, r1) - max(s0, r0) is
longer than 1 ms" (the float operations are monotone, so it also holds bit for bit). Consequences: frames
that only touch the word at a boundary, or overlap it by 1 ms or less, do not count; frames of 1 ms or
shorter never count; duplicate frames count as often as they occur. We apply the three conditions
literally, so `mode="mean"` reproduces the SDK's unweighted mean on every word the SDK emits.

Where we differ from the SDK, on purpose:

- Words with |r1 - r0| < EPSILON are dropped by the SDK (no output). We collapse the frames that contain
  the word's midpoint t (s0 <= t <= s1), unweighted; coverage is 1 if there is one, else 0.
- A word no frame counts for has no SDK output; we return coverage 0, n_frames 0 and the fill.
- Frames with any NaN/inf value, or with valid=False, are excluded before anything else (the SDK averages
  them in). `nonfinite_frames` counts the frames that were valid but held a non-finite value.
- Words with NaN/inf times (untimed text) get coverage 0 and zeros.

Modes: `mean` unweighted mean; `weighted` mean weighted by each frame's overlap duration with the word
(midpoint words: unweighted); `max` per-dimension maximum; `std` population standard deviation.

coverage is exact: the length of the word covered by the union of usable frames, divided by the word's
length, clipped to [0, 1] and forced to 0 when no frame counts (so it also includes the sub-millisecond
slivers of frames the epsilon rule leaves out). fill="nearest" copies the usable frame closest in time to
the word's midpoint (distance 0 if the frame contains it; between a frame ending before and one starting
after at equal distance, the earlier one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from ..errors import PipelineError
from ..records import FrameFeatures, Words
from .codes import FINITE
from .codes import MODES as MODE_CODES  # name -> the kernels' integer code (MODES below: the names)

EPSILON = 10e-4  # the SDK's module constant, in seconds

Mode = Literal["mean", "weighted", "max", "std"]
Fill = Literal["zeros", "nearest"]
MODES: tuple[str, ...] = get_args(Mode)
FILLS: tuple[str, ...] = get_args(Fill)

__all__ = ["EPSILON", "FILLS", "MODES", "CollapseConfig", "Collapsed", "Fill", "Mode", "collapse", "collapse_segment"]


@dataclass(frozen=True)
class CollapseConfig:
    mode: Mode = "weighted"
    fill: Fill = "zeros"

    def __post_init__(self) -> None:  # a bad setting fails the build at once, not every segment one by one
        if self.mode not in MODES:
            raise _error(f"collapse: unknown mode {self.mode!r} (one of {', '.join(MODES)})")
        if self.fill not in FILLS:
            raise _error(f"collapse: unknown fill {self.fill!r} (one of {', '.join(FILLS)})")


@dataclass
class Collapsed:
    values: np.ndarray  # (W, D) float32, always finite
    coverage: np.ndarray  # (W,) float32 in [0, 1]; 0 = no usable frame (values hold the fill, must be masked)
    n_frames: np.ndarray  # (W,) int32 usable frames that overlap each word
    nonfinite_frames: int  # frames excluded because any value was NaN/inf (counted once per frame)


def _error(message: str) -> PipelineError:
    return PipelineError(message, stage="collapse")


def _as_1d(name: str, x: object, n: int | None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        raise _error(f"collapse: {name} has shape {a.shape}, expected ({'N' if n is None else n},)")
    return a


def _check_inputs(values, frame_start, frame_end, word_start, word_end, valid):
    values = np.asarray(values)
    if values.ndim != 2:
        raise _error(f"collapse: values must be 2-D (frames, dims), got shape {values.shape}")
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise _error(f"collapse: values must be numeric, got dtype {values.dtype}")
    n = values.shape[0]
    fs = _as_1d("frame_start", frame_start, n)
    fe = _as_1d("frame_end", frame_end, n)
    ws = _as_1d("word_start", word_start, None)
    we = _as_1d("word_end", word_end, ws.shape[0])
    if valid is None:
        ok = np.ones(n, bool)
    else:
        ok = np.asarray(valid)
        if ok.shape != (n,):
            raise _error(f"collapse: valid has shape {ok.shape}, expected ({n},)")
        ok = ok.astype(bool)
    if not (np.isfinite(fs).all() and np.isfinite(fe).all()):
        raise _error(f"collapse: {int((~np.isfinite(fs) | ~np.isfinite(fe)).sum())} frame times are NaN/inf")
    bad = np.flatnonzero(fe < fs)
    if bad.size:
        i = int(bad[0])
        raise _error(f"collapse: {bad.size} frames end before they start (first: frame {i}, [{fs[i]}, {fe[i]}])")
    bad = np.flatnonzero(we < ws)  # False where either is NaN: untimed words are allowed
    if bad.size:
        i = int(bad[0])
        raise _error(f"collapse: {bad.size} words end before they start (first: word {i}, [{ws[i]}, {we[i]}])")
    return values, fs, fe, ws, we, ok


def _nearest_frame(s0: np.ndarray, s1: np.ndarray, cummax_end: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index (into the sorted usable frames) of the frame nearest to each instant t; frames must exist."""
    n = s0.size
    pos = np.arange(n)
    # The latest frame reaching the running maximum of ends: it contains t when that maximum is >= t.
    argmax_end = np.maximum.accumulate(np.where(s1 >= cummax_end, pos, 0))
    k = np.searchsorted(s0, t, side="right") - 1  # last frame starting at or before t
    kc = np.maximum(k, 0)
    contains = (k >= 0) & (cummax_end[kc] >= t)
    by_end = np.argsort(s1, kind="stable")
    j = np.searchsorted(s1[by_end], t, side="right") - 1  # frame with the latest end at or before t
    jc = np.maximum(j, 0)
    d_before = np.where(j >= 0, t - s1[by_end[jc]], np.inf)
    i = np.searchsorted(s0, t, side="left")  # first frame starting at or after t
    ic = np.minimum(i, n - 1)
    d_after = np.where(i < n, s0[ic] - t, np.inf)
    pick = np.where(d_before <= d_after, by_end[jc], ic)
    return np.where(contains, argmax_end[kc], pick)


def collapse(
    values: np.ndarray,
    frame_start: np.ndarray,
    frame_end: np.ndarray,
    word_start: np.ndarray,
    word_end: np.ndarray,
    config: CollapseConfig = CollapseConfig(),
    valid: np.ndarray | None = None,
) -> Collapsed:
    """Collapse (N, D) frames to (W, D) word vectors; see the module docstring for which frames count."""
    # the compiled extension, or numba and LLVM on first use: not with every `import pipelines`
    from .aot import kernels as compiled_kernels

    kernels = compiled_kernels()

    values, fs, fe, ws, we, ok = _check_inputs(values, frame_start, frame_end, word_start, word_end, valid)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)  # integers, float16: the kernels take float32/float64
    values = np.ascontiguousarray(values)
    n_words, dims = ws.shape[0], values.shape[1]

    # Valid frames sorted by start (the SDK sorts by start, stably, too); finiteness is learnt as they are read.
    rows = np.arange(values.shape[0]) if ok.all() else np.flatnonzero(ok)
    s0 = fs[rows]
    if s0.size > 1 and not (s0[1:] >= s0[:-1]).all():
        order = np.argsort(s0, kind="stable")
        rows, s0 = rows[order], s0[order]
    s1 = fe[rows]
    cm = np.maximum.accumulate(s1) if s1.size else s1

    # Candidate frames per word: a contiguous run [lo, hi) of the sorted frames (a superset).
    timed = np.isfinite(ws) & np.isfinite(we)
    short = timed & (np.abs(ws - we) < EPSILON)
    mid = np.where(timed, 0.5 * (ws + we), 0.0)
    # Frames with end <= r0 or start >= r1 have overlap <= 0 (exactly, in floats too): never candidates.
    lo = np.searchsorted(cm, ws, side="right")
    hi = np.searchsorted(s0, we, side="left")
    if short.any():
        lo[short] = np.searchsorted(cm, mid[short], side="left")
        hi[short] = np.searchsorted(s0, mid[short], side="right")
    lo = np.where(timed, lo, 0)
    hi = np.where(timed, hi, 0)

    # Each word walks its candidate run once, applies the SDK's test and accumulates (compiled, float64).
    out = np.zeros((n_words, dims), np.float64)
    n_frames = np.zeros(n_words, np.int32)
    x = values if dims else np.zeros((values.shape[0], 1), values.dtype)  # no dims: every frame is finite
    state = np.zeros(rows.size, np.int8)
    if n_words and rows.size:
        kernels.collapse_words(x, rows, s0, s1, lo, hi, ws, we, short, mid, MODE_CODES[config.mode],
                               EPSILON, out if dims else np.zeros((n_words, 1)), n_frames, state)
    kernels.check_rows(x, rows, state)  # frames no word reached: only counted
    usable = state == FINITE
    nonfinite = int(rows.size - np.count_nonzero(usable))
    if nonfinite:
        rows, s0, s1 = rows[usable], s0[usable], s1[usable]
        cm = np.maximum.accumulate(s1) if s1.size else s1
    has = np.flatnonzero(n_frames > 0)

    coverage = np.zeros(n_words, np.float64)
    long_has = has[~short[has]]
    if long_has.size:
        covered = kernels.covered_lengths(s0, cm, ws[long_has], we[long_has])
        coverage[long_has] = covered / (we[long_has] - ws[long_has])
    coverage[has[short[has]]] = 1.0
    coverage = np.clip(coverage, 0.0, 1.0)

    if config.fill == "nearest" and rows.size and dims:
        empty = np.flatnonzero((n_frames == 0) & timed)
        if empty.size:
            out[empty] = values[rows[_nearest_frame(s0, s1, cm, mid[empty])]]

    return Collapsed(
        values=out.astype(np.float32),
        coverage=coverage.astype(np.float32),
        n_frames=n_frames,
        nonfinite_frames=nonfinite,
    )


def collapse_segment(
    frames: FrameFeatures,
    words: Words,
    config: CollapseConfig = CollapseConfig(),
    *,
    segment_id: str | None = None,
) -> Collapsed:
    """Collapse one segment's frames onto its words; untimed (NaN) words get coverage 0 and the zero fill."""
    try:
        return collapse(frames.values, frames.start, frames.end, words.start, words.end, config, valid=frames.valid)
    except PipelineError as err:
        if segment_id is not None:
            err.item_id = segment_id
            err.args = (f"segment {segment_id}: {err.args[0]}",)
        raise
