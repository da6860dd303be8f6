"""The contract: validate() names the table, column and row of each problem; versions are checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_schemas import (
    SCHEMA_VERSION,
    FeatureSet,
    Manifest,
    SchemaVersionError,
    Store,
    aligned_schema,
    list_of_vectors,
    segments_schema,
    validate,
    validate_aligned,
    validate_segments,
)
from pipelines.build import build_store
from pipelines.store_writer import BuildConfig
from tests import synthetic_recipe as syn


def seg_rows(**over) -> pa.Table:
    rows = [
        {"segment_id": "a[0]", "video_id": "a", "split": "train", "sentiment": 1.0, "source": "t"},
        {"segment_id": "a[1]", "video_id": "a", "split": "test", "sentiment": -2.0, "happy": 0.3, "source": "t"},
    ]
    for i, changes in over.items():
        rows[int(i[1:])].update(changes)
    schema = segments_schema()
    return pa.Table.from_pydict({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema)


def test_segments_problems_name_column_and_row() -> None:
    assert validate_segments(seg_rows()) == []
    probs = validate_segments(seg_rows(r1={"split": "dev", "sentiment": float("nan")}))
    text = [str(p) for p in probs]
    assert "segments.split [a[1]]: unknown split 'dev' (allowed: train, valid, test)" in text
    assert any(p.column == "sentiment" and p.row_id == "a[1]" and "NaN" in p.message for p in probs)
    dup = validate_segments(seg_rows(r1={"segment_id": "a[0]"}))
    assert [(p.column, p.row_id) for p in dup] == [("segment_id", "a[0]")]
    out = validate_segments(seg_rows(r0={"happy": 3.5}))
    assert [(p.column, p.row_id) for p in out] == [("happy", "a[0]")]


def test_aligned_wrong_dimension_and_nan() -> None:
    fs = {"au": FeatureSet("au", ("x", "y", "z"), "visual", "t")}
    good = {
        "segment_id": ["s"], "split": ["train"], "words": [["hi", "there"]], "word_start": [[0.0, 0.5]],
        "word_end": [[0.5, 1.0]], "word_confidence": [[1.0, 1.0]], "align_method": ["given"],
        "au__coverage": [[1.0, 0.0]],
    }
    table = pa.Table.from_pydict({**good, "au": list_of_vectors([np.ones((2, 3))], 3)}, schema=aligned_schema({"au": 3}))
    assert validate_aligned(table, fs) == []
    wrong = pa.Table.from_pydict({**good, "au": list_of_vectors([np.ones((2, 4))], 4)}, schema=aligned_schema({"au": 4}))
    assert [p.message for p in validate_aligned(wrong, fs)] == ["wrong dimension: 4, expected 3"]
    nan = pa.Table.from_pydict({**good, "au": list_of_vectors([np.array([[1, 2, 3], [np.nan, 0, 0]])], 3)}, schema=aligned_schema({"au": 3}))
    assert [(p.column, p.row_id) for p in validate_aligned(nan, fs)] == [("au", "s")]


def test_feature_set_names_and_dims_checked() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        FeatureSet("Bad-Name", ("a",), "audio", "x")
    with pytest.raises(ValueError, match="repeated dimension"):
        FeatureSet("ok", ("a", "a"), "audio", "x")
    fs = FeatureSet("ok", ("a", "b"), "audio", "x", "1.0", {"k": 1}, 100.0)
    assert FeatureSet.from_dict(json.loads(json.dumps(fs.to_dict()))) == fs


def test_store_schema_version_and_checksum(tmp_path: Path) -> None:
    build_store(tmp_path / "s", "syn", syn.make_units(3), syn.process, syn.FEATURE_SETS, BuildConfig(), progress=False)
    assert validate(tmp_path / "s").ok
    # a file changed after the build: validate names it
    part = sorted((tmp_path / "s").glob("segments/*/part-*.parquet"))[0]
    t = pq.read_table(part)
    pq.write_table(t.slice(0, max(0, t.num_rows - 1)), part)
    report = validate(tmp_path / "s")
    assert not report.ok and "size differs from the manifest" in str(report) and part.name in str(report)
    # a store from another schema major version is refused with a message saying what to do
    m = json.loads((tmp_path / "s/manifest.json").read_text())
    m["schema_version"] = "9.0"
    (tmp_path / "s/manifest.json").write_text(json.dumps(m))
    with pytest.raises(SchemaVersionError, match=f"schema version '9.0', this code reads {SCHEMA_VERSION}"):
        Store(tmp_path / "s")
    assert "schema version" in str(validate(tmp_path / "s"))


def test_manifest_is_deterministic_json(tmp_path: Path) -> None:
    a = build_store(tmp_path / "a", "syn", syn.make_units(3), syn.process, syn.FEATURE_SETS, progress=False)
    b = build_store(tmp_path / "b", "syn", syn.make_units(3), syn.process, syn.FEATURE_SETS, progress=False)
    assert (a.store / "manifest.json").read_text() == (b.store / "manifest.json").read_text()
    assert Manifest.load(a.store).rows("segments") == 9
    card = (a.store / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "config_name: aligned" in card
