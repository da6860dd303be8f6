"""`mmolre predict VIDEO`: extract one video's features exactly as training stores were built, then explain the
run's prediction word by word."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Any

from feature_schemas import Store, StoreError
from flows.options import build_config, video_config
from flows.timeline import explain_segment


def predict_video(video: str | Path, run: str | Path, transcript: str | None = None, face: str | None = "dlib",
                  fps: float | None = None, workdir: str | Path | None = None) -> dict[str, Any]:
    """Sentiment, emotions and a per-word timeline for one video file."""
    from pipelines.recipes.videos import plan_videos
    from pipelines.store_writer import run_plan

    video = Path(video)
    if not video.is_file():
        raise FileNotFoundError(f"{video}: no such video file")
    with tempfile.TemporaryDirectory(prefix="mmolre-predict-", dir=workdir) as tmp:
        manifest = Path(tmp) / "manifest.csv"
        with open(manifest, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["video_path", "segment_id", "transcript", "split"])
            w.writeheader()
            w.writerow({"video_path": str(video.resolve()), "segment_id": "input", "transcript": transcript or "", "split": "test"})
        store = Path(tmp) / "store"
        plan = plan_videos(manifest, video_config(face=face, fps=fps), build_config(), split="test")
        run_plan(plan, store, executor=None, progress=False)
        s = Store(store)
        if not s.segments().num_rows:
            reasons = "; ".join(f"[{r['stage']}] {r['reason']}" for r in s.failures().to_pylist()) or "no segment extracted"
            raise StoreError(f"{video}: could not extract features: {reasons}")
        out = explain_segment(store, run, "input")
    out["video"] = str(video)
    return out
