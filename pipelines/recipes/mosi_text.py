"""CMU-MOSI's `id,text,label,mode` label.csv as text-only segments, read by the videos recipe (`mmolre build videos
--input mosi/label.csv`: the words and the text encoder's vectors) and, for its continuous labels, by the
bc-LSTM utterance recipe."""

from __future__ import annotations

from pathlib import Path

from ..inputs import (
    ParsedInputs,
    SegmentSpec,
    check_id,
    check_labels,
    check_split,
    is_missing,
    require_input,
    text_value,
)
from .label_table import RowId, read_label_table


def read_mosi_labels(path: str | Path) -> ParsedInputs:
    """CMU-MOSI's `id,text,label,mode` label file as text-only segments (video id: the id before its last `_`)."""
    path = require_input(path, "MOSI label file")

    def segment(r: dict, rid: RowId) -> SegmentSpec:
        rid.segment = sid = check_id(r.get("id"))
        vid = sid.rsplit("_", 1)[0] if "_" in sid else sid
        return SegmentSpec(sid, vid, None, None, None, text_value(r.get("text")),
                           check_labels({"sentiment": r.get("label")}), check_split(r.get("mode")),
                           "mosi-labels", str(path))

    return read_label_table(path, ("id", "text", "label", "mode"), "mosi-labels", segment,
                            first_id=lambda r: None if is_missing(r.get("id")) else str(r["id"]))
