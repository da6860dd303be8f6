"""OpenFace 2.0 output as a face backend: import the CSV that FeatureExtraction / FaceLandmarkVidMulti wrote.

OpenFace itself is a C++ tool run beforehand; this backend only reads its CSV (`frame, [face_id,] timestamp,
confidence, success, gaze_*, pose_*, x_*, y_*, AU*_r, AU*_c`, names with leading spaces in real files) and
resamples it onto our frame grid. `success`/`confidence` become valid/confidence. The CSV sits beside the video
as `<video stem>.csv`, in `csv_dir`, or at an explicit `csv_path`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import feature_schemas

from ...errors import PipelineError
from ...records import FrameFeatures
from ..registry import register
from .base import STAGE, FaceBackend, invalid_frames
from .frames import frame_grid

AU_INTENSITY_COLUMNS: tuple[str, ...] = tuple(
    f"AU{n:02d}_r" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
)
POSE_COLUMNS: tuple[str, ...] = ("pose_Rx", "pose_Ry", "pose_Rz")
GAZE_COLUMNS: tuple[str, ...] = ("gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z")
DEFAULT_COLUMNS: tuple[str, ...] = AU_INTENSITY_COLUMNS + POSE_COLUMNS + GAZE_COLUMNS


@dataclass(frozen=True)
class OpenFaceConfig:
    fps: float = 5.0  # rows are resampled to this rate (the row on display at each interval's midpoint)
    csv_dir: str | None = None  # where <video stem>.csv lives; default: beside the video
    csv_path: str | None = None  # one explicit CSV (for single-video use)
    columns: tuple[str, ...] = DEFAULT_COLUMNS  # OpenFace columns to keep, in order (AU intensities, pose, gaze)
    min_confidence: float = 0.0  # rows with success=1 but a lower confidence are invalid too
    feature_set_name: str = "face_openface"


def dim_name(column: str) -> str:
    """OpenFace column -> our dimension name: `AU01_r` -> `au01_r`, `pose_Rx` -> `pose_rx`."""
    return column.strip().lower()


def read_openface_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The CSV as a DataFrame with stripped column names."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: OpenFace CSV not found", stage=STAGE, source_path=str(path))
    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise PipelineError(f"{path}: cannot read OpenFace CSV ({exc})", stage=STAGE, source_path=str(path)) from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


@functools.lru_cache(maxsize=8)
def _main_face_track(path: str, mtime: float, columns: tuple[str, ...], min_confidence: float) -> FrameFeatures:
    """A video's main-face frames at OpenFace's own rate, read and mapped once per file (and modification time
    and settings): each of the video's segments then only resamples its slice."""
    return map_openface_rows(main_face_rows(read_openface_csv(path)), columns, min_confidence, path)


def main_face_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per frame: with several faces (a `face_id` column), the most confident successful one."""
    if "frame" not in df.columns:
        raise PipelineError("OpenFace CSV lacks the frame column", stage=STAGE)
    if "face_id" not in df.columns or df["frame"].is_unique:
        return df.sort_values("frame", kind="stable").reset_index(drop=True)
    ranked = df.assign(_ok=df["success"].astype(float)).sort_values(
        ["frame", "_ok", "confidence"], ascending=[True, False, False], kind="stable"
    )
    return ranked.drop_duplicates("frame").drop(columns="_ok").reset_index(drop=True)


def map_openface_rows(
    df: pd.DataFrame, columns: tuple[str, ...] = DEFAULT_COLUMNS, min_confidence: float = 0.0,
    source: str = "OpenFace CSV",
) -> FrameFeatures:
    """OpenFace rows (one per frame, native rate) -> FrameFeatures: frame i covers [timestamp_i, timestamp_{i+1})
    (the last one a median frame step long); values are the CSV's columns unchanged, 0 where success is 0."""
    needed = ("timestamp", "confidence", "success") + tuple(columns)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise PipelineError(f"{source}: OpenFace CSV lacks columns {missing}", stage=STAGE, source_path=source)
    start = df["timestamp"].to_numpy(np.float64)
    step = float(np.median(np.diff(start))) if len(start) > 1 else 1.0 / 30.0
    end = np.append(start[1:], start[-1] + step) if len(start) else start.copy()
    confidence = df["confidence"].to_numpy(np.float64)
    values = df[list(columns)].to_numpy(np.float64)
    valid = (df["success"].to_numpy(np.float64) > 0) & (confidence >= min_confidence) & np.isfinite(values).all(1)
    values = np.where(valid[:, None], values, 0.0)
    return FrameFeatures(start, end, values, valid, np.where(valid, np.clip(confidence, 0.0, 1.0), 0.0))


def resample(native: FrameFeatures, start: float, end: float, fps: float) -> FrameFeatures:
    """Onto intervals [t, t + 1/fps) of [start, end): each takes the native frame shown at its midpoint (the
    nearest one at the CSV's edges), or is invalid where it does not overlap the CSV's time range at all. No
    interpolation, so values stay OpenFace's own."""
    starts = frame_grid(start, end, fps)
    mids = starts + 0.5 / fps
    out = invalid_frames(starts, starts + 1.0 / fps, native.values.shape[1])
    if len(native.start):
        idx = np.clip(np.searchsorted(native.start, mids, side="right") - 1, 0, len(native.start) - 1)
        inside = (starts + 1.0 / fps > native.start[0]) & (starts < native.end[-1])
        src = idx[inside]
        out.values[inside], out.valid[inside], out.confidence[inside] = (native.values[src], native.valid[src],
                                                                         native.confidence[src])
    return out


@register("face", "openface")
class OpenFaceCsvBackend(FaceBackend):
    """OpenFace 2.0 action units, head rotation and gaze, imported from its CSV next to each video."""

    config_class = OpenFaceConfig

    def feature_set(self) -> feature_schemas.FeatureSet:
        cfg = self.config_dict()
        cfg.pop("csv_dir", None)
        cfg.pop("csv_path", None)
        return feature_schemas.FeatureSet(
            name=self.config.feature_set_name,
            dims=tuple(dim_name(c) for c in self.config.columns),
            modality="visual",
            extractor="openface-2.0-csv",
            extractor_version="2.0",
            config=cfg,
            frame_rate=self.fps,
            description=(
                "OpenFace 2.0 output imported from its CSV, main face per frame: by default action-unit "
                "intensities (au*_r, 0-5), head rotation in radians (pose_rx pitch, pose_ry yaw, pose_rz roll) and "
                "both eyes' gaze unit vectors (gaze_0_* right/left as OpenFace numbers them). Values are OpenFace's "
                "own, taken from the row on display at each frame interval's midpoint; frames where OpenFace "
                "reports no success are invalid and 0."
            ),
        )

    def csv_for(self, video_path: str | os.PathLike[str]) -> Path:
        """Where this video's OpenFace CSV is expected."""
        if self.config.csv_path:
            return Path(self.config.csv_path)
        video = Path(video_path)
        folder = Path(self.config.csv_dir) if self.config.csv_dir else video.parent
        return folder / f"{video.stem}.csv"

    def extract_video(
        self, video_path: str | os.PathLike[str], start: float | None = None, end: float | None = None,
        fps: float | None = None,
    ) -> FrameFeatures:
        fps = self.fps if fps is None else float(fps)
        csv = self.csv_for(video_path)
        if not csv.is_file():
            raise PipelineError(f"{video_path}: no OpenFace CSV at {csv} (run OpenFace's FeatureExtraction on the "
                                "video, or set csv_dir / csv_path)", stage=STAGE, source_path=str(csv))
        native = _main_face_track(str(csv), csv.stat().st_mtime, tuple(self.config.columns),
                                  float(self.config.min_confidence))
        start = 0.0 if start is None else float(start)
        if end is None:
            end = float(native.end[-1]) if len(native.end) else start
        return resample(native, start, float(end), fps)
