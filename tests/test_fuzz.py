"""Fuzzing: arbitrary inputs to the .csd reader, the manifest parser and the collapse engine either work or
raise our own error types; they never crash the process, hang, or leak a library's exception."""

from __future__ import annotations

import json
import string
from pathlib import Path

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.collapse import CollapseConfig, collapse
from pipelines.csd import CsdFile
from pipelines.errors import PipelineError
from pipelines.inputs import read_manifest

FUZZ = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read_everything(path: Path) -> None:
    with CsdFile(path) as f:
        for vid in f.ids()[:5]:
            f.shape(vid)
            f.intervals(vid)
            f.features(vid)


@FUZZ
@given(data=st.binary(max_size=4096), cut=st.integers(0, 4096))
def test_csd_reader_on_random_and_truncated_bytes(tmp_path_factory, data: bytes, cut: int) -> None:
    folder = tmp_path_factory.mktemp("csd")
    good = folder / "good.csd"
    with h5py.File(good, "w") as h:
        g = h.create_group("seq/data/v1")
        g["features"] = np.arange(12, dtype=np.float32).reshape(6, 2)
        g["intervals"] = np.stack([np.arange(6.0), np.arange(6.0) + 1], axis=1)
        h.create_group("seq/metadata")
    blob = good.read_bytes()
    for name, content in {"random.csd": data, "truncated.csd": blob[: min(cut, len(blob) - 1)],
                          "spliced.csd": blob[:cut] + data + blob[cut + len(data):]}.items():
        path = folder / name
        path.write_bytes(content)
        try:
            _read_everything(path)
        except PipelineError as e:
            assert str(path) in str(e)


shapes = st.sampled_from([(0, 2), (6, 2), (6, 1), (3,), (6, 2, 1)])


@FUZZ
@given(
    features=shapes, intervals=st.sampled_from([(6, 2), (5, 2), (6, 3), (6,), (0, 2)]),
    dtype=st.sampled_from(["f4", "f8", "i4", "S3"]), meta=st.one_of(st.none(), st.text(max_size=20), st.binary(max_size=20)),
)
def test_csd_reader_on_malformed_entries(tmp_path_factory, features, intervals, dtype, meta) -> None:
    path = tmp_path_factory.mktemp("csd") / "odd.csd"
    with h5py.File(path, "w") as h:
        g = h.create_group("seq/data/v1")
        g["features"] = np.zeros(features, dtype=dtype)
        g["intervals"] = np.zeros(intervals, dtype="f8")
        m = h.create_group("seq/metadata")
        if meta is not None:
            m["dimension names"] = np.array([meta.encode() if isinstance(meta, str) else meta])
    try:
        _read_everything(path)
    except PipelineError as e:
        assert "odd.csd" in str(e)


cell = st.one_of(st.none(), st.text(string.printable, max_size=12), st.floats(allow_nan=True), st.integers(-10, 10))
COLUMNS = ["video_path", "segment_id", "start", "end", "transcript", "sentiment", "emotions", "emotion", "split", "happy"]


@FUZZ
@given(rows=st.lists(st.dictionaries(st.sampled_from(COLUMNS), cell, max_size=len(COLUMNS)), max_size=6),
       as_jsonl=st.booleans(), garbage=st.binary(max_size=64))
def test_manifest_parser_on_arbitrary_rows(tmp_path_factory, rows, as_jsonl: bool, garbage: bytes) -> None:
    folder = tmp_path_factory.mktemp("manifest")
    if as_jsonl:
        path = folder / "m.jsonl"
        path.write_bytes("\n".join(json.dumps(r) for r in rows).encode() + b"\n" + garbage)
    else:
        import csv

        path = folder / "m.csv"
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            for r in rows:
                w.writerow(r)
    try:
        parsed = read_manifest(path)
    except PipelineError as e:
        assert "m." in str(e)
        return
    for failure in parsed.failures:  # every rejected row says why
        assert failure.reason
    for spec in parsed.specs:
        assert spec.video_path is not None or spec.transcript is not None


floats = st.floats(-1e6, 1e6, allow_nan=True, allow_infinity=True)


@FUZZ
@given(n=st.integers(0, 30), w=st.integers(0, 10), d=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       mode=st.sampled_from(["mean", "weighted", "max", "std"]), fill=st.sampled_from(["zeros", "nearest"]),
       poison=st.sampled_from([None, None, None, np.nan, np.inf, -np.inf]), swap=st.sampled_from([False, False, False, True]))
def test_collapse_on_arbitrary_intervals(n, w, d, seed, mode, fill, poison, swap) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, d))
    fs, fe = np.sort(rng.uniform(-5, 5, (2, n)), axis=0)
    ws, we = np.sort(rng.uniform(-5, 5, (2, w)), axis=0)
    if swap and w:  # a word ending before it starts: must be refused, not crash
        ws[0], we[0] = we[0] + 0.5, ws[0]
    if poison is not None and n:  # a non-finite frame time: refused too
        fs[rng.integers(n)] = poison
    try:
        out = collapse(values, fs, fe, ws, we, CollapseConfig(mode=mode, fill=fill))
    except PipelineError:
        assert (swap and w) or (poison is not None and n), "refused a well-formed input"
        return
    assert out.values.shape == (w, d) and np.isfinite(out.values).all()
    assert ((out.coverage >= 0) & (out.coverage <= 1)).all()


def test_manifest_home_of_unknown_user_is_a_row_failure(tmp_path: Path) -> None:
    """Found by the fuzzer above: `~0` made pathlib raise RuntimeError from expanduser()."""
    path = tmp_path / "m.csv"
    path.write_text("video_path,segment_id,transcript\n~nosuchuser0/a.mp4,x,hi\n,y,hello\n")
    parsed = read_manifest(path)
    assert [s.segment_id for s in parsed.specs] == ["y"]
    assert parsed.failures[0].item_id == "x" and "home directory" in parsed.failures[0].reason
