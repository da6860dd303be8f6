"""The compiled inner loops of `pipelines.collapse.collapse` (numba): one pass over each word's candidate frames.

A NumPy formulation materialises the (word, frame) pairs, a float64 copy of the frames and a sparse matrix;
on MOSEI-sized inputs that is memory traffic several times the size of the features. Here each word walks
its own contiguous run of start-sorted frames, applies the SDK's overlap test and accumulates in float64
straight from the stored (float32) values, so the frames are read about once. The functions are compiled on
first use and cached (`cache=True`: next to this file, or in numba's user cache where this folder is
read-only), so the compile (a few seconds) is paid once per machine; a process then loads them in ~0.4 s.
`aot.py` compiles the same functions ahead of time (`make install`), which a process loads without numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .codes import FINITE, MAX, MEAN, NONFINITE, UNKNOWN, WEIGHTED


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _row_is_finite(x: np.ndarray) -> bool:
    """x * 0 is 0 for every finite x (however large) and NaN otherwise, so the row's sum of x * 0 is 0 exactly
    when the row is finite: branch-free. Reassociating the sum (the only fast-math licence given; NaN and inf
    keep their meaning) lets the compiler vectorise it."""
    acc = x[0] * 0
    for j in range(1, x.shape[0]):
        acc += x[j] * 0
    return acc == 0


@njit(cache=True, nogil=True)
def check_rows(values: np.ndarray, rows: np.ndarray, state: np.ndarray) -> None:
    """Set state[k] to FINITE or NONFINITE for every frame k still UNKNOWN (values has >= 1 column)."""
    for k in range(rows.shape[0]):
        if state[k] == UNKNOWN:
            state[k] = FINITE if _row_is_finite(values[rows[k]]) else NONFINITE


@njit(cache=True, nogil=True)
def _counts(a: float, b: float, r0: float, r1: float, t: float, short: bool, eps: float) -> float:
    """The frame's weight for the word, or -1 when it does not count (the SDK's test; see pipelines.collapse)."""
    if short:
        return 1.0 if (a <= t and b >= t) else -1.0
    overlap = min(b, r1) - max(a, r0)
    if r1 - a > -eps and b - r0 > -eps and abs(overlap) > eps:
        return overlap
    return -1.0


@njit(cache=True, nogil=True)
def collapse_words(values: np.ndarray, rows: np.ndarray, s0: np.ndarray, s1: np.ndarray, lo: np.ndarray,
                   hi: np.ndarray, ws: np.ndarray, we: np.ndarray, short: np.ndarray, mid: np.ndarray,
                   mode: int, eps: float, out: np.ndarray, n_frames: np.ndarray, state: np.ndarray) -> None:
    """Fill out (W, D) float64 and n_frames (W,) from the frames s0/s1 (start-sorted; `rows` maps them to rows
    of `values`); word w's candidates are the sorted frames lo[w] <= k < hi[w]. Each candidate's finiteness
    is checked on first sight and kept in state[k] (frames with NaN/inf do not count), so the values are read
    once, while they are in cache, rather than in a separate pass."""
    d = values.shape[1]
    acc = np.empty(d, np.float64)
    for w in range(ws.shape[0]):
        if hi[w] <= lo[w]:
            continue
        r0, r1, t, sh = ws[w], we[w], mid[w], short[w]
        if mode == MAX:
            acc[:] = -np.inf
        else:
            acc[:] = 0.0
        n = 0
        total = 0.0
        for k in range(lo[w], hi[w]):
            if state[k] == UNKNOWN:
                state[k] = FINITE if _row_is_finite(values[rows[k]]) else NONFINITE
            if state[k] == NONFINITE:
                continue
            weight = _counts(s0[k], s1[k], r0, r1, t, sh, eps)
            if weight < 0:
                continue
            n += 1
            total += weight
            x = values[rows[k]]
            if mode == WEIGHTED:
                for j in range(d):
                    acc[j] += weight * np.float64(x[j])
            elif mode == MAX:
                for j in range(d):
                    acc[j] = max(acc[j], np.float64(x[j]))
            else:
                for j in range(d):
                    acc[j] += np.float64(x[j])
        n_frames[w] = n
        if n == 0:
            continue
        if mode == MEAN:
            for j in range(d):
                out[w, j] = acc[j] / n
        elif mode == WEIGHTED:
            for j in range(d):
                out[w, j] = acc[j] / total
        elif mode == MAX:
            out[w] = acc
        else:  # population standard deviation, two passes for accuracy
            for j in range(d):
                acc[j] /= n
            sq = np.zeros(d, np.float64)
            for k in range(lo[w], hi[w]):
                if state[k] == NONFINITE or _counts(s0[k], s1[k], r0, r1, t, sh, eps) < 0:
                    continue
                x = values[rows[k]]
                for j in range(d):
                    dev = np.float64(x[j]) - acc[j]
                    sq[j] += dev * dev
            for j in range(d):
                out[w, j] = np.sqrt(sq[j] / n)


@njit(cache=True, nogil=True)
def covered_lengths(s0: np.ndarray, cummax_end: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Length of each [a, b] covered by the union of the frames (s0 sorted, cummax_end its running maximum of
    ends): the frames merge into disjoint blocks, and a running total of block lengths answers each word with
    two binary searches. Depends only on the sorted starts and the running maximum, so not on the order of
    frames that start together."""
    n = s0.shape[0]
    out = np.zeros(a.shape[0])
    if n == 0:
        return out
    m0 = np.empty(n)
    m1 = np.empty(n)
    blocks = 0
    for k in range(n):
        if k == 0 or s0[k] > cummax_end[k - 1]:
            m0[blocks] = s0[k]
            blocks += 1
        m1[blocks - 1] = cummax_end[k]
    m0, m1 = m0[:blocks], m1[:blocks]
    before = np.zeros(blocks + 1)
    for i in range(blocks):
        before[i + 1] = before[i] + (m1[i] - m0[i])
    for w in range(a.shape[0]):
        out[w] = _covered_up_to(m0, m1, before, b[w]) - _covered_up_to(m0, m1, before, a[w])
    return out


@njit(cache=True, nogil=True)
def _covered_up_to(m0: np.ndarray, m1: np.ndarray, before: np.ndarray, t: float) -> float:
    k = np.searchsorted(m0, t, side="right") - 1
    if k < 0:
        return 0.0
    return before[k] + min(max(t - m0[k], 0.0), m1[k] - m0[k])
