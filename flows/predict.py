"""`mmolre predict VIDEO`: extract one video's features exactly as the run's training store was built, then
explain the run's prediction word by word."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from feature_schemas import Store, StoreError
from flows.timeline import explain_segment

log = logging.getLogger(__name__)


def extraction_config(run: str | Path, face: str | None = None) -> Any:
    """The VideoConfig the run's training store recorded in its manifest, so a new video gets the features the
    model learnt from (same face backend, text model, rates). Defaults where that store is gone or was not
    built from videos. `face` ("none" for no face) overrides the recorded backend."""
    from mmolre.inference import load_run
    from pipelines.recipes.videos import VideoConfig

    store = load_run(run)[2]["store"]
    try:
        recorded = Store(store).manifest.build.get("config")
        config = VideoConfig(**recorded) if isinstance(recorded, dict) else None
    except (StoreError, OSError, TypeError, ValueError):
        config = None
    if config is None:
        log.warning("%s: no video extraction settings recorded in the training store %s; using the defaults", run, store)
        config = VideoConfig()
    return config if face is None else replace(config, face=None if face == "none" else face)


def check_video(video: str | Path) -> None:
    """Refuse, as `build` does, a video that is missing, a folder, a FIFO (opening it would block), a device..."""
    from pipelines.errors import PipelineError
    from pipelines.media import path_problem

    if (problem := path_problem(video)) is not None:
        raise PipelineError(f"input {video} {problem}", stage="read", source_path=str(video))


def predict_video(video: str | Path, run: str | Path, transcript: str | None = None,
                  face: str | None = None, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentiment, emotions and a per-word timeline for one video file, with `run`: the run, the store it learnt
    from and how many test segments it was scored on (`summary`: `run_summary(run)` when the caller has read it)."""
    from pipelines.inputs import read_video
    from pipelines.recipes.videos import build_videos

    video = Path(video)
    check_video(video)
    with tempfile.TemporaryDirectory(prefix="mmolre-predict-") as tmp:
        store = Path(tmp) / "store"
        build_videos(read_video(video.resolve(), "input", "test", transcript or None), store,
                     extraction_config(run, face), split="test", progress=False)
        s = Store(store)
        if not s.segments().num_rows:
            reasons = "; ".join(f"[{r['stage']}] {r['reason']}" for r in s.failures().to_pylist()) or "no segment extracted"
            raise StoreError(f"{video}: could not extract features: {reasons}")
        out = explain_segment(store, run, "input")
    out["video"] = str(video)
    from mmolre.inference import run_summary

    out["run"] = summary if summary is not None else run_summary(run)  # which run and store made this prediction
    return out
