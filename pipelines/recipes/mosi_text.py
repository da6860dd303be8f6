"""CMU-MOSI's `id,text,label,mode` label.csv as text-only segments, read by the videos recipe (`mmolre build videos
--input mosi/label.csv`: the words and the text encoder's vectors) and, for its continuous labels, by the
bc-LSTM utterance recipe."""

from __future__ import annotations

from pathlib import Path

from ..inputs import (
    ParsedInputs,
    RowError,
    SegmentSpec,
    check_id,
    check_labels,
    check_row,
    check_split,
    is_missing,
    need_columns,
    read_rows,
    require_input,
    row_failure,
    text_value,
    unique_specs,
)


def read_mosi_labels(path: str | Path) -> ParsedInputs:
    """CMU-MOSI's `id,text,label,mode` label file as text-only segments (video id: the id before its last `_`)."""
    path = require_input(path, "MOSI label file")
    rows = read_rows(path)
    need_columns(path, rows, ("id", "text", "label", "mode"))
    out = ParsedInputs(source="mosi-labels", path=str(path))
    for n, r in enumerate(rows, start=2):
        sid = None if is_missing(r.get("id")) else str(r["id"])
        try:
            check_row(r)
            sid = check_id(r.get("id"))
            vid = sid.rsplit("_", 1)[0] if "_" in sid else sid
            out.specs.append(SegmentSpec(sid, vid, None, None, None, text_value(r.get("text")),
                                         check_labels({"sentiment": r.get("label")}), check_split(r.get("mode")),
                                         "mosi-labels", str(path)))
        except RowError as e:
            out.failures.append(row_failure(path, n, sid, e))
    return unique_specs(out)
