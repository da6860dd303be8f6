"""One bad row costs only itself: an over-long CSV field, a JSONL line that is no object, a row nested too deep
(which raised RecursionError), a control character of the C1 range in an id, each fails its own row, named; the
rest of the file reads and builds. Long ids are shortened in messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feature_schemas import Store
from flows.cli import main
from pipelines.inputs import check_id, read_manifest
from pipelines.rows import MAX_FIELD

DEEP = "[" * 100_000 + "]" * 100_000


def test_bad_jsonl_lines_fail_alone(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    lines = [json.dumps({"segment_id": "a", "transcript": "a good row"}), "[1, 2, 3]",
             '{"segment_id": "deep", "transcript": ' + DEEP + "}",
             json.dumps({"segment_id": "nested", "transcript": "x", "extra": json.loads("[" * 40 + "]" * 40)}),
             json.dumps({"segment_id": "long", "transcript": "w " * MAX_FIELD}),
             json.dumps({"segment_id": "b", "transcript": "another good row"})]
    manifest.write_text("\n".join(lines) + "\n")
    parsed = read_manifest(manifest)
    assert [s.segment_id for s in parsed.specs] == ["a", "b"]
    reasons = {f.item_id: f.reason for f in parsed.failures}
    assert reasons == {
        "m.jsonl:row2": f"{manifest}: row 2: line 2 is a JSON list, not an object of columns",
        "m.jsonl:row3": f"{manifest}: row 3: line 3 is nested too deeply to read",
        "m.jsonl:row4": f"{manifest}: row 4: line 4 is nested 41 levels deep (a row holds at most 32)",
        "m.jsonl:row5": f"{manifest}: row 5: line 5 is {len(lines[4]):,} characters long (over {MAX_FIELD:,})",
    }


def test_an_over_long_csv_field_fails_its_row_and_the_rest_builds(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("segment_id,transcript,split\n"
                        "good1,a fine sentence,train\n"
                        f"huge,{'word ' * 40_000},train\n"  # 200,000 characters: over the csv module's 131,072
                        "good2,another fine sentence,test\n")
    parsed = read_manifest(manifest)  # the csv module's own limit no longer fails the whole file
    assert [s.segment_id for s in parsed.specs] == ["good1", "huge", "good2"] and not parsed.failures
    big = tmp_path / "big.csv"
    big.write_text("segment_id,transcript\nok,fine\n" + f"long,{'w' * (MAX_FIELD + 1)}\n")
    parsed = read_manifest(big)
    assert [s.segment_id for s in parsed.specs] == ["ok"]
    assert parsed.failures[0].reason == f"{big}: row 3: field 'transcript' is {MAX_FIELD + 1:,} characters long (over {MAX_FIELD:,})"
    out = tmp_path / "s"
    assert main(["build", "videos", "--input", str(big), "--out", str(out), "--face", "none", "--workers", "0",
                 "--quiet"]) == 0
    assert Store(out).segments().column("segment_id").to_pylist() == ["ok"]
    assert [f["item_id"] for f in Store(out).failures().to_pylist()] == ["big.csv:row3"]


def test_c1_control_characters_are_rejected_and_long_ids_shortened() -> None:
    for bad in ("clip\x85one", "x\x9b31m", "\x80"):
        with pytest.raises(ValueError, match="contains control characters"):
            check_id(bad)
    with pytest.raises(ValueError) as e:
        check_id("v" * 10_000 + "/x")
    assert len(str(e.value)) < 200 and "(10,002 characters)" in str(e.value)
    assert check_id("café_ü") == "café_ü"
