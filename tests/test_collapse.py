"""The word collapse engine against a literal O(words x frames) port of the SDK rule and against mmsdk itself."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.collapse import EPSILON, CollapseConfig, collapse, collapse_segment
from pipelines.errors import PipelineError
from pipelines.records import FrameFeatures, Words

MODES = ["mean", "weighted", "max", "std"]


# ---- naive reference: one Python loop over words x frames, the SDK's conditions written out -------------------


def _sdk_counts(s0: float, s1: float, r0: float, r1: float) -> bool:
    """`__intersect_and_copy` of mmsdk 0.0.6 for one frame, with its inverted copies, as written there."""
    ref_copy = np.array([-r1, r0])  # ref copied, ref[1] negated, reversed
    sub_copy = np.array([-s0, s1])  # sub copied, sub[:, 0] negated
    if not np.all((sub_copy - ref_copy) > -EPSILON):
        return False
    return abs(max(s0, r0) - min(s1, r1)) > EPSILON


def _naive(values, fs, fe, ws, we, valid, mode):
    n, d = values.shape
    usable = valid & np.isfinite(values).all(axis=1)
    out = np.zeros((len(ws), d))
    n_frames = np.zeros(len(ws), int)
    coverage = np.zeros(len(ws))
    for w in range(len(ws)):
        r0, r1 = ws[w], we[w]
        if not (np.isfinite(r0) and np.isfinite(r1)):
            continue
        short = abs(r0 - r1) < EPSILON
        t = 0.5 * (r0 + r1)
        sel, wts = [], []
        for j in range(n):
            if not usable[j]:
                continue
            if short:
                if fs[j] <= t <= fe[j]:
                    sel.append(j)
                    wts.append(1.0)
            elif _sdk_counts(fs[j], fe[j], r0, r1):
                sel.append(j)
                wts.append(min(fe[j], r1) - max(fs[j], r0))
        n_frames[w] = len(sel)
        if not sel:
            continue
        x = values[sel].astype(np.float64)
        wts = np.array(wts)
        if mode == "mean":
            out[w] = x.mean(0)
        elif mode == "weighted":
            out[w] = (x * wts[:, None]).sum(0) / wts.sum()
        elif mode == "max":
            out[w] = x.max(0)
        else:
            out[w] = x.std(0)
        if short:
            coverage[w] = 1.0
        else:  # union of all usable frames, clipped to the word
            spans = sorted((max(fs[j], r0), min(fe[j], r1)) for j in range(n) if usable[j] and fe[j] > r0 and fs[j] < r1)
            total, cur0, cur1 = 0.0, None, None
            for a, b in spans:
                if cur1 is None or a > cur1:
                    total += 0.0 if cur1 is None else cur1 - cur0
                    cur0, cur1 = a, b
                else:
                    cur1 = max(cur1, b)
            total += 0.0 if cur1 is None else cur1 - cur0
            coverage[w] = min(max(total / (r1 - r0), 0.0), 1.0)
    return out, n_frames, coverage


# ---- random segments with many boundary coincidences ---------------------------------------------------------

LENGTHS = [0.0, 0.0005, 0.001, 0.0015, 0.005, 0.01, 0.01, 0.025, 0.04, 0.1]
WORD_LENGTHS = [0.0, 0.0004, 0.001, 0.002, 0.01, 0.03, 0.05, 0.2, 0.5]


@st.composite
def segments(draw, max_frames: int = 40, max_words: int = 12):
    n = draw(st.integers(0, max_frames))
    d = draw(st.integers(1, 4))
    tick = draw(st.sampled_from([0.005, 0.01, 1 / 30]))
    fs = np.array([draw(st.integers(0, 60)) * tick for _ in range(n)], np.float64)
    fe = fs + np.array([draw(st.sampled_from(LENGTHS)) for _ in range(n)])
    w = draw(st.integers(0, max_words))
    ws = np.array([draw(st.integers(-5, 70)) * draw(st.sampled_from([0.01, 0.005, 0.0125])) for _ in range(w)])
    we = ws + np.array([draw(st.sampled_from(WORD_LENGTHS)) for _ in range(w)])
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 3, (n, d)).astype(np.float32)
    if n and draw(st.booleans()):
        bad = rng.random(n) < 0.15
        values[bad, rng.integers(0, d, n)[bad]] = rng.choice([np.nan, np.inf, -np.inf], int(bad.sum()))
    valid = rng.random(n) > 0.1 if draw(st.booleans()) else np.ones(n, bool)
    if w and draw(st.booleans()):  # a few untimed words
        ws[rng.random(w) < 0.2] = np.nan
        we[np.isnan(ws)] = np.nan
    return values, fs, fe, ws, we, valid


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(segments(), st.sampled_from(MODES))
def test_matches_naive_reference(seg, mode):
    values, fs, fe, ws, we, valid = seg
    got = collapse(values, fs, fe, ws, we, CollapseConfig(mode=mode), valid=valid)
    ref, ref_n, ref_cov = _naive(values, fs, fe, ws, we, valid, mode)
    np.testing.assert_array_equal(got.n_frames, ref_n)
    np.testing.assert_allclose(got.values, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.coverage, ref_cov, atol=1e-6)
    assert got.values.dtype == np.float32 and got.values.shape == (len(ws), values.shape[1])
    assert np.isfinite(got.values).all()
    assert ((got.coverage >= 0) & (got.coverage <= 1)).all()
    assert (got.coverage[got.n_frames == 0] == 0).all()
    assert got.nonfinite_frames == int((valid & ~np.isfinite(values).all(axis=1)).sum())


@FAST
@given(segments(), st.sampled_from(MODES))
def test_every_numeric_layout_gives_the_same_words(seg, mode):
    """The compiled kernels see float32/float64 C arrays; other dtypes and layouts must not change a result."""
    values, fs, fe, ws, we, valid = seg
    cfg = CollapseConfig(mode=mode)
    base = collapse(values, fs, fe, ws, we, cfg, valid=valid)
    for other in (values.astype(np.float64), np.asfortranarray(values), np.repeat(values, 2, axis=1)[:, ::2]):
        got = collapse(other, fs, fe, ws, we, cfg, valid=valid)
        np.testing.assert_array_equal(got.n_frames, base.n_frames)
        np.testing.assert_array_equal(got.coverage, base.coverage)
        np.testing.assert_allclose(got.values, base.values, rtol=1e-6, atol=1e-6)
        assert got.nonfinite_frames == base.nonfinite_frames
    finite = np.isfinite(values).all(axis=1)
    ints = np.where(np.isfinite(values), np.round(values), 0).astype(np.int16)
    as_ints = collapse(ints, fs, fe, ws, we, cfg, valid=valid & finite)
    as_floats = collapse(ints.astype(np.float32), fs, fe, ws, we, cfg, valid=valid & finite)
    np.testing.assert_allclose(as_ints.values, as_floats.values, rtol=1e-6, atol=1e-6)
    no_dims = collapse(values[:, :0], fs, fe, ws, we, cfg, valid=valid & finite)
    np.testing.assert_array_equal(no_dims.n_frames, base.n_frames)
    assert no_dims.values.shape == (len(ws), 0) and no_dims.nonfinite_frames == 0


@FAST
@given(segments())
def test_input_order_does_not_matter(seg):
    values, fs, fe, ws, we, valid = seg
    perm = np.random.default_rng(len(fs)).permutation(len(fs))
    a = collapse(values, fs, fe, ws, we, CollapseConfig(mode="weighted", fill="nearest"), valid=valid)
    b = collapse(values[perm], fs[perm], fe[perm], ws, we, CollapseConfig(mode="weighted", fill="nearest"), valid=valid[perm])
    np.testing.assert_array_equal(a.n_frames, b.n_frames)
    np.testing.assert_allclose(a.values[a.n_frames > 0], b.values[a.n_frames > 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(a.coverage, b.coverage)


@FAST
@given(segments())
def test_weighted_mean_lies_within_covered_frames(seg):
    values, fs, fe, ws, we, valid = seg
    got = collapse(values, fs, fe, ws, we, CollapseConfig(mode="weighted"), valid=valid)
    lo = collapse(values, fs, fe, ws, we, CollapseConfig(mode="max"), valid=valid)
    hi_neg = collapse(-values, fs, fe, ws, we, CollapseConfig(mode="max"), valid=valid)
    has = got.n_frames > 0
    tol = 1e-5 * (1 + np.abs(got.values[has]))
    assert (got.values[has] <= lo.values[has] + tol).all()
    assert (got.values[has] >= -hi_neg.values[has] - tol).all()


@FAST
@given(segments())
def test_nearest_fill_copies_a_closest_usable_frame(seg):
    values, fs, fe, ws, we, valid = seg
    got = collapse(values, fs, fe, ws, we, CollapseConfig(mode="mean", fill="nearest"), valid=valid)
    usable = valid & np.isfinite(values).all(axis=1)
    for w in np.flatnonzero(got.n_frames == 0):
        if not usable.any() or not np.isfinite(ws[w]):
            assert (got.values[w] == 0).all()
            continue
        t = 0.5 * (ws[w] + we[w])
        dist = np.where(usable, np.maximum.reduce([fs - t, t - fe, np.zeros_like(fs)]), np.inf)
        closest = np.flatnonzero(dist == dist.min())
        assert any(np.array_equal(got.values[w], values[j]) for j in closest), (w, closest)


# ---- hand-made boundary cases --------------------------------------------------------------------------------


def _grid(n=10, hz=100.0, d=2):
    fs = np.arange(n) / hz
    values = np.stack([np.arange(n, dtype=np.float32) * (k + 1) for k in range(d)], axis=1)
    return values, fs, fs + 1 / hz


def test_frames_straddling_word_edges():
    values, fs, fe = _grid()
    ws = np.array([0.01, 0.0095, 0.0085, 0.005, 0.0])
    we = np.array([0.02, 0.02, 0.02, 0.02, 0.1])
    mean = collapse(values, fs, fe, ws, we, CollapseConfig(mode="mean"))
    # touching frames 0 and 2 do not count; a 0.5 ms overlap does not; 1.5 ms does
    assert mean.n_frames.tolist() == [1, 1, 2, 2, 10]
    assert mean.values[:, 0].tolist() == [1.0, 1.0, 0.5, 0.5, 4.5]
    weighted = collapse(values, fs, fe, ws, we, CollapseConfig(mode="weighted"))
    np.testing.assert_allclose(weighted.values[3, 0], (0.005 * 0 + 0.01 * 1) / 0.015, rtol=1e-6)
    np.testing.assert_allclose(weighted.values[2, 0], (0.0015 * 0 + 0.01 * 1) / 0.0115, rtol=1e-6)
    np.testing.assert_allclose(weighted.coverage, 1.0)
    assert collapse(values, fs, fe, ws, we, CollapseConfig(mode="max")).values[4].tolist() == [9.0, 18.0]
    np.testing.assert_allclose(collapse(values, fs, fe, ws, we, CollapseConfig(mode="std")).values[4, 0], np.arange(10).std(), rtol=1e-6)


def test_an_overlap_of_exactly_epsilon_does_not_count():
    values = np.array([[1.0], [2.0]], np.float32)
    fs, fe = np.array([0.0, 0.0]), np.array([0.5, EPSILON])
    got = collapse(values, fs, fe, np.array([0.0, 0.0, -1.0]), np.array([EPSILON, 0.0011, 1.0]), CollapseConfig(mode="mean"))
    # word [0, 1 ms]: overlap 1 ms with both frames, not more -> nothing; frame [0, 1 ms] never counts
    assert got.n_frames.tolist() == [0, 1, 1]
    assert got.values[:, 0].tolist() == [0.0, 1.0, 1.0]
    assert got.coverage[0] == 0.0


def test_zero_length_words_use_frames_containing_the_instant():
    values, fs, fe = _grid()
    ws = np.array([0.01, 0.015, 0.0504])
    we = np.array([0.01, 0.015, 0.0508])  # the last is 0.4 ms long: shorter than the SDK's epsilon
    for mode in ("mean", "weighted"):
        got = collapse(values, fs, fe, ws, we, CollapseConfig(mode=mode))
        assert got.n_frames.tolist() == [2, 1, 1]
        np.testing.assert_allclose(got.values[:, 0], [0.5, 1.0, 5.0])
        assert got.coverage.tolist() == [1.0, 1.0, 1.0]


def test_words_outside_all_frames_and_untimed_words():
    values, fs, fe = _grid()
    ws = np.array([-1.0, 0.5, 0.2, np.nan, 0.03])
    we = np.array([-0.5, 0.6, 0.2, np.nan, 0.05])
    zeros = collapse(values, fs, fe, ws, we, CollapseConfig(mode="weighted", fill="zeros"))
    assert zeros.n_frames.tolist() == [0, 0, 0, 0, 2]
    assert zeros.coverage.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert (zeros.values[:4] == 0).all()
    near = collapse(values, fs, fe, ws, we, CollapseConfig(mode="weighted", fill="nearest"))
    assert near.coverage.tolist() == zeros.coverage.tolist()
    assert near.values[:4, 0].tolist() == [0.0, 9.0, 9.0, 0.0]  # first frame, last, last, untimed -> zeros
    empty = collapse(values[:0], fs[:0], fe[:0], ws, we, CollapseConfig(fill="nearest"))
    assert empty.values.shape == (5, 2) and (empty.values == 0).all() and (empty.coverage == 0).all()


def test_partial_coverage_counts_the_union_of_frames():
    values = np.ones((3, 1), np.float32)
    fs, fe = np.array([0.0, 0.05, 0.3]), np.array([0.1, 0.15, 0.4])  # overlapping frames, then a gap
    got = collapse(values, fs, fe, np.array([0.0, 0.1]), np.array([0.4, 0.2]))
    np.testing.assert_allclose(got.coverage, [0.625, 0.5], rtol=1e-6)


def test_nonfinite_and_invalid_frames_are_excluded_and_counted():
    values, fs, fe = _grid(d=3)
    values[2, 1] = np.nan
    values[3, 0] = -np.inf
    values[4, 2] = np.inf
    values[5] = np.nan  # also invalid: excluded, but not counted as non-finite
    valid = np.ones(10, bool)
    valid[[5, 6]] = False
    got = collapse(values, fs, fe, np.array([0.0]), np.array([0.1]), CollapseConfig(mode="mean"), valid=valid)
    assert got.nonfinite_frames == 3
    assert got.n_frames.tolist() == [5]
    np.testing.assert_allclose(got.values[0, 0], np.mean([0, 1, 7, 8, 9]))
    np.testing.assert_allclose(got.coverage, [0.5])
    only_bad = collapse(values[2:6], fs[2:6], fe[2:6], np.array([0.02]), np.array([0.06]), CollapseConfig(fill="nearest"))
    assert only_bad.n_frames.tolist() == [0] and (only_bad.values == 0).all() and only_bad.nonfinite_frames == 4


def test_unknown_mode_or_fill_is_refused_when_the_config_is_made():
    with pytest.raises(PipelineError, match="unknown mode 'median'"):
        CollapseConfig(mode="median")
    with pytest.raises(PipelineError, match="unknown fill 'last'"):
        CollapseConfig(fill="last")


def test_huge_finite_values_are_not_taken_for_overflow():
    values = np.full((4, 3), 3e38, np.float32)  # each row sums past float32's range; every value is finite
    values[1, 2] = np.nan
    fs = np.arange(4) / 100
    got = collapse(values, fs, fs + 0.01, np.array([0.0]), np.array([0.04]), CollapseConfig(mode="mean"))
    assert got.nonfinite_frames == 1 and got.n_frames.tolist() == [3]
    np.testing.assert_allclose(got.values, [[3e38] * 3], rtol=1e-6)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: {**a, "values": a["values"][:, 0]}, "2-D"),
        (lambda a: {**a, "frame_start": a["frame_start"][:-1]}, "frame_start"),
        (lambda a: {**a, "frame_end": a["frame_end"][:, None]}, "frame_end"),
        (lambda a: {**a, "word_end": a["word_end"][:1]}, "word_end"),
        (lambda a: {**a, "valid": np.ones(3, bool)}, "valid"),
        (lambda a: {**a, "frame_end": a["frame_start"] - 0.01}, "frames end before"),
        (lambda a: {**a, "word_end": a["word_start"] - 1}, "words end before"),
        (lambda a: {**a, "frame_start": np.full(10, np.nan)}, "NaN"),
    ],
)
def test_bad_inputs_raise_pipeline_error(change, message):
    values, fs, fe = _grid()
    args = dict(values=values, frame_start=fs, frame_end=fe, word_start=np.array([0.0, 0.05]), word_end=np.array([0.05, 0.1]))
    with pytest.raises(PipelineError, match=message) as info:
        collapse(**change(args))
    assert info.value.stage == "collapse"


def test_collapse_segment_handles_untimed_words_and_names_the_segment():
    values, fs, fe = _grid()
    frames = FrameFeatures(fs, fe, values, valid=np.arange(10) != 3)
    words = Words(["a", "b"], np.array([0.0, np.nan]), np.array([0.05, np.nan]), np.ones(2), "forced")
    got = collapse_segment(frames, words, CollapseConfig(mode="mean"))
    assert got.n_frames.tolist() == [4, 0]  # frames 0, 1, 2, 4: frame 3 is invalid
    np.testing.assert_allclose(got.coverage, [0.8, 0.0], rtol=1e-6)
    np.testing.assert_allclose(got.values[0], [1.75, 3.5])
    untimed = collapse_segment(frames, Words.untimed(["x", "y", "z"]), CollapseConfig(fill="nearest"))
    assert (untimed.values == 0).all() and (untimed.coverage == 0).all()
    bad = Words(["a"], np.array([1.0]), np.array([0.5]), np.ones(1), "given")
    with pytest.raises(PipelineError, match="seg_7") as info:
        collapse_segment(frames, bad, segment_id="seg_7")
    assert info.value.item_id == "seg_7" and info.value.stage == "collapse"


# ---- the real SDK ---------------------------------------------------------------------------------------------


def _sdk_metadata(root: str) -> dict[str, str]:
    from mmsdk.mmdatasdk.configurations.metadataconfigs import featuresetMetadataTemplate

    meta = {key: f"test {key}" for key in featuresetMetadataTemplate}
    meta["root name"] = root
    return meta


def _sdk_average(intervals, features):
    try:
        return np.average(features, axis=0)
    except TypeError:  # the words sequence is text; it is collapsed too
        return features[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_equals_mmsdk_align(tmp_path, seed):
    mmdatasdk = pytest.importorskip("mmsdk.mmdatasdk")
    rng = np.random.default_rng(seed)
    videos = {}
    for v in range(3):
        n = int(rng.integers(50, 200))
        hz = rng.choice([100.0, 30.0])
        fs = np.round(np.arange(n) / hz + rng.choice([0.0, 0.003]), 4)
        fe = fs + rng.choice([1 / hz, 0.025], n)
        dup = rng.random(n) < 0.1  # duplicated frames and frames sharing a boundary
        fs, fe = np.concatenate([fs, fs[dup]]), np.concatenate([fe, fe[dup]])
        values = rng.normal(0, 2, (len(fs), 3))
        w = int(rng.integers(5, 40))
        ws = np.round(rng.uniform(-0.2, n / hz + 0.2, w), 2)  # 10 ms grid: many exact frame boundaries
        we = ws + rng.choice([0.0, 0.0005, 0.001, 0.01, 0.1, 0.3], w)
        perm = rng.permutation(len(fs))
        videos[f"vid{v}"] = (values[perm], fs[perm], fe[perm], ws, we)

    words = mmdatasdk.computational_sequence("words")
    words.setData({k: {"intervals": np.stack([v[3], v[4]], 1), "features": np.array([[b"w"]] * len(v[3]))}
                   for k, v in videos.items()}, "words")
    feats = mmdatasdk.computational_sequence("feats")
    feats.setData({k: {"intervals": np.stack([v[1], v[2]], 1), "features": v[0]} for k, v in videos.items()}, "feats")
    for seq, name in ((words, "words"), (feats, "feats")):
        seq.setMetadata(_sdk_metadata(name), name)
        seq.deploy(str(tmp_path / f"{name}.csd"))  # every metadata key is set: deploy() does not prompt
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = mmdatasdk.mmdataset({name: str(tmp_path / f"{name}.csd") for name in ("words", "feats")})
        dataset.align("words", collapse_functions=[_sdk_average])
    aligned = dataset["feats"].data

    compared = 0
    for vid, (values, fs, fe, ws, we) in videos.items():
        got = collapse(values, fs, fe, ws, we, CollapseConfig(mode="mean"))
        for i in range(len(ws)):
            key = f"{vid}[{i}]"
            if key in aligned:
                assert got.n_frames[i] > 0
                np.testing.assert_allclose(got.values[i], np.asarray(aligned[key]["features"])[0], rtol=1e-6, atol=1e-6)
                compared += 1
            else:  # the SDK drops words shorter than its epsilon, and words no frame counts for
                assert abs(we[i] - ws[i]) < EPSILON or got.n_frames[i] == 0
    assert compared >= 10


# -- the kernels compiled ahead of time (pipelines/collapse/aot.py) ------------------------------------------
@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - an extension module
    """The extension built from the current kernels into a temporary folder (what `make install` does)."""
    from pipelines.collapse import aot

    folder = tmp_path_factory.mktemp("aot")
    aot.build(folder)
    module = aot.load(folder)
    assert module is not None
    return module


def _random_case(rng: np.random.Generator, dtype: type) -> tuple:
    """Frames (some NaN/inf rows, unsorted, overlapping) and words (some zero-length, some untimed)."""
    n, d, w = int(rng.integers(0, 60)), int(rng.integers(0, 5)), int(rng.integers(0, 25))
    start = np.round(rng.uniform(0, 10, n), 2)
    end = start + np.round(rng.uniform(0.0, 0.5, n), 2)
    values = rng.normal(size=(n, d)).astype(dtype)
    if n and d:
        values[rng.random(n) < 0.1, int(rng.integers(0, d))] = rng.choice([np.nan, np.inf, -np.inf])
    ws = np.round(rng.uniform(-1, 11, w), 2)
    we = ws + np.where(rng.random(w) < 0.2, 0.0, np.round(rng.uniform(0, 1.5, w), 2))
    ws[rng.random(w) < 0.1] = np.nan
    valid = rng.random(n) > 0.1
    return values, start, end, ws, we, valid


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_kernels_equal_numba(compiled, monkeypatch: pytest.MonkeyPatch, dtype: type) -> None:  # noqa: ANN001
    """The ahead-of-time extension and numba's JIT give equal words, coverage, counts and non-finite counts for
    every mode and fill on 150 random inputs each."""
    from pipelines.collapse import aot

    rng = np.random.default_rng(7)
    cases = [_random_case(rng, dtype) for _ in range(150)]
    for mode in ("mean", "weighted", "max", "std"):
        for fill in ("zeros", "nearest"):
            config = CollapseConfig(mode, fill)
            results = {}
            for name, ext in (("aot", compiled), ("jit", None)):
                monkeypatch.setattr(aot, "kernels", lambda ext=ext: aot.Kernels(ext))
                results[name] = [collapse(*c[:5], config, valid=c[5]) for c in cases]
            for a, j in zip(results["aot"], results["jit"], strict=True):
                assert np.array_equal(a.values, j.values) and np.array_equal(a.coverage, j.coverage)
                assert np.array_equal(a.n_frames, j.n_frames) and a.nonfinite_frames == j.nonfinite_frames


def test_compiled_kernels_refuse_what_they_were_not_built_for(compiled, tmp_path) -> None:  # noqa: ANN001
    """Other argument types go to numba (the extension does not check types itself), and an extension built
    from other kernel source is not loaded at all."""
    import shutil

    from pipelines.collapse import aot

    k = aot.Kernels(compiled)
    s0, cm = np.array([0.0, 1.0, 2.0], np.float32), np.array([1.0, 2.0, 3.0], np.float32)
    a, b = np.array([0.5], np.float32), np.array([2.5], np.float32)
    assert k.covered_lengths(s0, cm, a, b).tolist() == [2.0]  # float32: numba's JIT converts, as before
    values = np.ones((3, 2), np.float32)[:, ::2]  # not C-contiguous
    state = np.zeros(3, np.int8)
    k.check_rows(values, np.arange(3), state)
    assert state.tolist() == [1, 1, 1]
    stale = tmp_path / "stale"
    stale.mkdir()
    built = Path(compiled.__spec__.origin)
    shutil.copy(built, stale / built.name)
    (stale / aot.STAMP).write_text('{"source": "other kernels"}\n')
    assert aot.load(stale) is None
    (stale / aot.STAMP).write_text(json.dumps({"source": aot.source_id()}))
    assert aot.load(stale) is not None


def test_installed_extension_collapses_without_numba() -> None:
    """What `make install` built is what a build worker uses: a fresh process collapses without importing
    numba (its import and cache load were ~0.5 s of every worker's start)."""
    import subprocess
    import sys

    from pipelines.collapse import aot

    if aot.load() is None:
        pytest.skip("the collapse extension is not built here (make install builds it)")
    code = ("import sys, numpy as np; from pipelines.collapse import collapse; "
            "c = collapse(np.ones((3, 2), np.float32), [0, .1, .2], [.1, .2, .3], [0.0], [0.25]); "
            "print(c.n_frames.tolist(), 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[3]", "False"]
