"""MMSA-FET's raw layout: a folder with `label.csv` (video_id, clip_id, text, label, label_T, label_A, label_V,
annotation, mode) and `Raw/<video_id>/<clip_id>.mp4`, read as segments of the videos recipe (`mmolre build
videos --input FOLDER`: every clip through the media stage)."""

from __future__ import annotations

from pathlib import Path

from feature_schemas import SENTIMENT_CLASSES

from ..inputs import (
    ParsedInputs,
    RowError,
    SegmentSpec,
    check_id,
    check_labels,
    check_split,
    media_problem,
    number_in,
    require_input,
    text_value,
)
from .label_table import RowId, read_label_table


def read_mmsa_fet(root: str | Path, label_file: str = "label.csv", raw_dir: str = "Raw",
                  suffix: str = ".mp4", check_files: bool = True) -> ParsedInputs:
    """MMSA-FET layout: `label.csv` + `Raw/<video_id>/<clip_id>.mp4`; segment id `<video_id>_<clip_id>`
    (the CMU-MOSI label.csv convention). A row whose clip is missing fails."""
    root = Path(root)
    labels_path = require_input(root / label_file, "MMSA label file")

    def segment(r: dict, rid: RowId) -> SegmentSpec:
        vid = check_id(r.get("video_id"), "video_id")
        clip = check_id(r.get("clip_id"), "clip_id")
        rid.segment = sid = check_id(f"{vid}_{clip}")
        annotation = text_value(r.get("annotation"))
        labels = check_labels({"sentiment": r.get("label"),
                               "sentiment_class": annotation if annotation and annotation.strip().lower()
                               in SENTIMENT_CLASSES else None})
        extra = {k: number_in(r.get(k), k, -3.0, 3.0) for k in ("label_T", "label_A", "label_V") if k in r}
        split = check_split(r.get("mode"))
        video = root / raw_dir / vid / f"{clip}{suffix}"
        if check_files and (problem := media_problem(video)):
            raise RowError(f"clip {video} {problem}")
        return SegmentSpec(sid, vid, video, None, None, text_value(r.get("text")), labels, split, "mmsa",
                           str(video), extra)

    return read_label_table(labels_path, ("video_id", "clip_id", "text", "label", "mode"), "mmsa", segment)
