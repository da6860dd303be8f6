"""The media stage for media at a URL: each unit's file is copied to a local temporary file on the worker that
runs the unit, the media stage (`stages.media.process_video_unit`) runs on that copy, and the copy is deleted.

Why a local copy and not PyAV on an fsspec file object: the media stage opens a file several times by path
(probe, audio, then every face backend samples frames itself: extract/face/frames.py), a unit decodes the
whole file's audio anyway (so every byte is read at least once), and an MP4 whose index (moov) sits at the end
makes the demuxer seek back and forth, one ranged request each. One streamed download (8 MiB requests) serves
all of them; the copy lives only while its unit runs, so a worker's disk holds one media file per running unit.

Failure rows, reasons and notes name the URL, never the temporary path; a missing object, bucket or
unreachable endpoint fails that unit's segments only, with the reason in one line.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from feature_schemas.storage import input_problem, input_suffix, is_url

from ..errors import FETCH_STAGE
from ..records import Failure, UnitResult, WorkUnit
from .media import MediaUnit, VideoConfig, process_video_unit, unreadable_unit


def process_url_media_unit(unit: WorkUnit, config: VideoConfig) -> UnitResult:
    """`process_video_unit`, with a URL unit's media fetched to a local temporary file first."""
    p = unit.payload
    if not (isinstance(p, MediaUnit) and is_url(p.path)):
        return process_video_unit(unit, config)
    from feature_schemas.storage import fetch_input

    with tempfile.TemporaryDirectory(prefix="mmolre-media-") as tmp:
        local = str(Path(tmp) / f"media{input_suffix(p.path)}")  # the suffix tells audio files from videos
        try:
            fetch_input(p.path, local)
        except Exception as e:  # noqa: BLE001 - botocore/aiohttp errors are not OSErrors
            return unreadable_unit(p, FETCH_STAGE, input_problem(p.path, e), p.path)
        result = process_video_unit(replace(unit, payload=replace(p, path=local)), config)
    return _naming_the_url(result, local, p.path)


def _naming_the_url(result: UnitResult, local: str, url: str) -> UnitResult:
    """The result with every mention of the temporary copy replaced by the URL it was fetched from."""
    def fix(text: str | None) -> str | None:
        return text.replace(local, url) if isinstance(text, str) else text

    failures = [Failure(f.item_id, f.stage, fix(f.reason) or "", fix(f.source_path)) for f in result.failures]
    notes = [{k: fix(v) or "" for k, v in n.items()} for n in result.notes]
    for rec in result.records:
        if isinstance(rec.segment.get("source_path"), str):
            rec.segment["source_path"] = fix(rec.segment["source_path"])
    return UnitResult(result.records, failures, result.report, notes)
