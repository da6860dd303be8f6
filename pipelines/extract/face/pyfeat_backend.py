"""py-feat as a face backend (action units, emotions, head pose, landmarks), from local weights only.

py-feat's Detector fetches its weights from a model hub when it is built and needs a torchvision matching the
installed torch. Neither is available on every machine, so this backend reads the weights from a folder the
user provides (`weights_dir` or $MMOLRE_PYFEAT_WEIGHTS) and fails at construction, with what to put where,
when weights or py-feat's dependencies are missing. `map_pyfeat_frame` turns py-feat's output table (the same
columns as its saved CSVs) into FrameFeatures and needs neither.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import feature_schemas

from ...errors import PipelineError
from ...records import FrameFeatures
from ..base import available, package_version
from ..registry import register
from . import geometry
from .base import STAGE, FaceBackend, invalid_frames
from .frames import sample_frames

WEIGHTS_ENV = "MMOLRE_PYFEAT_WEIGHTS"

AU_COLUMNS: tuple[str, ...] = (
    "AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU11", "AU12",
    "AU14", "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28", "AU43",
)
EMOTION_COLUMNS: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
POSE_COLUMNS: tuple[str, ...] = ("Pitch", "Roll", "Yaw")
LANDMARK_X: tuple[str, ...] = tuple(f"x_{i}" for i in range(geometry.N_LANDMARKS))
LANDMARK_Y: tuple[str, ...] = tuple(f"y_{i}" for i in range(geometry.N_LANDMARKS))
REQUIRED_COLUMNS: tuple[str, ...] = (
    ("FaceRectWidth", "FaceRectHeight", "FaceScore") + AU_COLUMNS + EMOTION_COLUMNS + POSE_COLUMNS + LANDMARK_X
    + LANDMARK_Y
)

DIMS: tuple[str, ...] = (
    tuple(c.lower() for c in AU_COLUMNS)
    + tuple(f"emo_{c}" for c in EMOTION_COLUMNS)
    + ("pose_pitch", "pose_roll", "pose_yaw")
    + geometry.LANDMARK_DIMS
    + ("face_found", "face_score")
)

# Which hub files each model choice needs: (hub repository, file name, alternative file name or None).
# They are looked up as <weights_dir>/<repository name>/<file> or <weights_dir>/<file>.
MODEL_FILES: dict[tuple[str, str], list[tuple[str, str, str | None]]] = {
    ("face_model", "retinaface"): [
        ("py-feat/retinaface_r34", "model.safetensors", "retinaface_r34.safetensors"),
        ("py-feat/pose_mlp_v2", "pose_mlp_v2.safetensors", None),
        ("py-feat/pose_mlp_v2", "pose_mlp_v2.json", None),
    ],
    ("face_model", "img2pose"): [
        ("py-feat/img2pose", "config.json", None),
        ("py-feat/img2pose", "model.safetensors", None),
    ],
    ("landmark_model", "mobilefacenet"): [("py-feat/mobilefacenet", "mobilefacenet_model_best.pth.tar", None)],
    ("landmark_model", "mobilenet"): [
        ("py-feat/mobilenet", "mobilenet_224_model_best_gdconv_external.pth.tar", None)
    ],
    ("landmark_model", "pfld"): [("py-feat/pfld", "pfld_model_best.pth.tar", None)],
    ("au_model", "xgb"): [("py-feat/xgb_au", "xgb_au_classifier_v2.skops", "xgb_au_classifier.skops")],
    ("au_model", "svm"): [("py-feat/svm_au", "svm_au_classifier_v2.skops", "svm_au_classifier.skops")],
    ("emotion_model", "resmasknet"): [
        ("py-feat/resmasknet", "config.json", None),
        ("py-feat/resmasknet", "ResMaskNet_Z_resmasking_dropout1_rot30.pth", None),
    ],
    ("emotion_model", "svm"): [("py-feat/svm_emo", "svm_emo_classifier.skops", None)],
}


@dataclass(frozen=True)
class PyFeatConfig:
    weights_dir: str | None = None  # default: $MMOLRE_PYFEAT_WEIGHTS
    fps: float = 5.0
    face_model: str = "retinaface"
    landmark_model: str = "mobilefacenet"
    au_model: str = "xgb"
    emotion_model: str = "resmasknet"
    face_detection_threshold: float = 0.5
    max_height: int | None = 480  # frames are scaled down to at most this many rows before detection
    batch_size: int = 8
    device: str = "cpu"
    main_face: str = "largest"  # "largest" box or highest "score"
    feature_set_name: str = "face_pyfeat"


def required_files(config: PyFeatConfig) -> list[tuple[str, str, str | None]]:
    """The hub files `config`'s model choices need, as (repository, file, alternative file)."""
    files: list[tuple[str, str, str | None]] = []
    for key in ("face_model", "landmark_model", "au_model", "emotion_model"):
        choice = getattr(config, key)
        if (key, choice) not in MODEL_FILES:
            options = sorted(c for k, c in MODEL_FILES if k == key)
            raise PipelineError(f"pyfeat face backend: {key}={choice!r} is not supported; choose one of {options}",
                                stage=STAGE)
        files.extend(MODEL_FILES[(key, choice)])
    return files


def _find(weights_dir: Path, repo: str, filename: str) -> Path | None:
    for candidate in (weights_dir / repo.split("/")[-1] / filename, weights_dir / filename):
        if candidate.is_file():
            return candidate
    return None


def weights_instructions(config: PyFeatConfig, weights_dir: Path | None = None) -> str:
    lines = [
        f"py-feat needs its model weights on local disk: set weights_dir=... or ${WEIGHTS_ENV} to a folder "
        "holding these files (downloaded elsewhere from the Hugging Face repositories named), laid out as "
        "<folder>/<repository name>/<file>:"
    ]
    for repo, filename, alt in required_files(config):
        found = weights_dir is not None and (
            _find(weights_dir, repo, filename) or (alt and _find(weights_dir, repo, alt))
        )
        alt_text = f" (or {alt})" if alt else ""
        lines.append(f"  {repo.split('/')[-1]}/{filename}{alt_text}   from {repo}" + ("   [found]" if found else ""))
    return "\n".join(lines)


def resolve_weights(config: PyFeatConfig) -> dict[tuple[str, str], Path]:
    """Map every required (repository, file) to a local path, or raise PipelineError saying what is missing."""
    raw = config.weights_dir or os.environ.get(WEIGHTS_ENV)
    if not raw:
        raise PipelineError("pyfeat face backend: no weights folder given.\n" + weights_instructions(config),
                            stage=STAGE)
    weights_dir = Path(raw).expanduser()
    if not weights_dir.is_dir():
        raise PipelineError(f"pyfeat face backend: weights folder {weights_dir} does not exist.\n"
                            + weights_instructions(config), stage=STAGE, source_path=str(weights_dir))
    found: dict[tuple[str, str], Path] = {}
    missing = []
    for repo, filename, alt in required_files(config):
        path = _find(weights_dir, repo, filename) or (_find(weights_dir, repo, alt) if alt else None)
        if path is None:
            missing.append(f"{repo.split('/')[-1]}/{filename}")
            continue
        found[(repo, filename)] = path
        if alt:
            found[(repo, alt)] = path
    if missing:
        raise PipelineError(f"pyfeat face backend: {weights_dir} lacks {', '.join(missing)}.\n"
                            + weights_instructions(config, weights_dir), stage=STAGE, source_path=str(weights_dir))
    return found


@contextlib.contextmanager
def _local_hub(files: dict[tuple[str, str], Path]) -> Iterator[None]:
    """While building the Detector, answer py-feat's hub downloads from `files` and never touch the network."""
    import feat.detector
    import feat.utils
    import huggingface_hub

    def local_download(repo_id: str, filename: str, *args: Any, **kwargs: Any) -> str:
        if (repo_id, filename) not in files:
            raise FileNotFoundError(f"py-feat asked for {repo_id}/{filename}, which is not in the weights folder")
        return str(files[(repo_id, filename)])

    def local_with_fallback(repo_id: str, filename: str, fallback_filename: str, cache_dir: Any = None) -> str:
        key = (repo_id, filename) if (repo_id, filename) in files else (repo_id, fallback_filename)
        return local_download(*key)

    patches = [
        (huggingface_hub, "hf_hub_download", local_download),
        (feat.detector, "hf_hub_download", local_download),
        (feat.detector, "hf_hub_download_with_fallback", local_with_fallback),
        (feat.utils, "hf_hub_download_with_fallback", local_with_fallback),
    ]
    saved = [(mod, attr, getattr(mod, attr)) for mod, attr, _ in patches if hasattr(mod, attr)]
    old_offline = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        for mod, attr, fn in patches:
            setattr(mod, attr, fn)
        yield
    finally:
        for mod, attr, fn in saved:
            setattr(mod, attr, fn)
        if old_offline is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_offline


@functools.lru_cache(maxsize=2)
def _detector(config: PyFeatConfig) -> Any:
    """py-feat's Detector for `config`, built once per process from local weights."""
    files = resolve_weights(config)
    try:
        import feat.detector
    except Exception as exc:  # ImportError, or torchvision failing to load its operators
        raise PipelineError(
            f"pyfeat face backend: py-feat cannot be imported here ({type(exc).__name__}: {exc}). It needs "
            "torchvision built for the installed torch, xgboost, skops, safetensors and huggingface_hub; install "
            "those, or use the 'dlib' backend (offline) or 'openface' (imports OpenFace CSVs).", stage=STAGE,
        ) from exc
    if config.face_model == "retinaface":  # the pose MLP is loaded lazily by py-feat; point it at our copy
        os.environ.setdefault("FEAT_POSE_MLP_PATH", str(files[("py-feat/pose_mlp_v2", "pose_mlp_v2.safetensors")]))
    try:
        with _local_hub(files):
            return feat.detector.Detectorv1(
                face_model=config.face_model, landmark_model=config.landmark_model, au_model=config.au_model,
                emotion_model=config.emotion_model, identity_model=None, gaze_model=None, device=config.device,
            )
    except Exception as exc:
        raise PipelineError(
            f"pyfeat face backend: building py-feat's Detector from {config.weights_dir or os.environ.get(WEIGHTS_ENV)}"
            f" failed ({type(exc).__name__}: {exc}).\n" + weights_instructions(config), stage=STAGE,
        ) from exc


def map_pyfeat_frame(
    df: pd.DataFrame, fps: float = 1.0, start: float = 0.0, n_frames: int | None = None,
    main_face: str = "largest",
) -> FrameFeatures:
    """py-feat's detection table (one row per face per frame, as `Detector.detect` returns or saves it) ->
    FrameFeatures in DIMS order: frame `i` (the `frame` column, else the row order) covers
    [start + i/fps, start + (i+1)/fps). Per frame the main face is kept (largest FaceRect, ties by FaceScore);
    frames with no row or a NaN FaceScore are invalid and 0. Landmarks are normalised as in geometry.py; the
    other values are py-feat's own."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise PipelineError(f"py-feat output lacks columns {missing[:8]}{'...' if len(missing) > 8 else ''}",
                            stage=STAGE)
    frame_ids = df["frame"].to_numpy(dtype=np.int64) if "frame" in df.columns else np.arange(len(df))
    n = int(frame_ids.max()) + 1 if n_frames is None and len(df) else (n_frames or 0)
    starts = start + np.arange(n, dtype=np.float64) / fps
    out = invalid_frames(starts, starts + 1.0 / fps, len(DIMS))
    score = df["FaceScore"].to_numpy(dtype=np.float64)
    area = (df["FaceRectWidth"] * df["FaceRectHeight"]).to_numpy(dtype=np.float64)
    order = np.lexsort((score, area) if main_face == "largest" else (area, score))  # best face last per frame
    best: dict[int, int] = {}
    for row in order:
        if np.isfinite(score[row]) and 0 <= frame_ids[row] < n:
            best[int(frame_ids[row])] = int(row)
    for i, row in best.items():
        r = df.iloc[row]
        points = np.stack([r[list(LANDMARK_X)].to_numpy(np.float64), r[list(LANDMARK_Y)].to_numpy(np.float64)], 1)
        vec = np.concatenate([
            r[list(AU_COLUMNS)].to_numpy(np.float64),
            r[list(EMOTION_COLUMNS)].to_numpy(np.float64),
            r[list(POSE_COLUMNS)].to_numpy(np.float64),
            geometry.flatten_landmarks(geometry.normalise_landmarks(points)),
            [1.0, score[row]],
        ])
        if np.all(np.isfinite(vec)):
            out.values[i], out.valid[i], out.confidence[i] = vec, True, float(np.clip(score[row], 0.0, 1.0))
    return out


@register("face", "pyfeat")
class PyFeatBackend(FaceBackend):
    """py-feat action units, emotions, head pose and landmarks (local weights)."""

    config_class = PyFeatConfig

    def availability(self) -> tuple[bool, str]:
        """py-feat installed and every weight file its model choices need found on local disk (nothing loaded)."""
        return available(("feat",), lambda: resolve_weights(self.config), " (it comes with py-feat)")

    def load(self) -> None:
        _detector(self.config)

    def feature_set(self) -> feature_schemas.FeatureSet:
        cfg = self.config_dict()
        cfg.pop("weights_dir", None)  # a local path, not a property of the features
        return feature_schemas.FeatureSet(
            name=self.config.feature_set_name,
            dims=DIMS,
            modality="visual",
            extractor="py-feat",
            extractor_version=package_version("py-feat"),
            config=cfg,
            frame_rate=self.fps,
            description=(
                "py-feat Detector, main face per frame: action-unit probabilities (au*), emotion probabilities "
                "(emo_*), head pose in degrees as py-feat reports it, 68 landmarks centred and divided by the "
                "inter-ocular distance, face_found and py-feat's FaceScore. Frames without a face are invalid and 0."
            ),
        )

    def extract_video(
        self, video_path: str | os.PathLike[str], start: float | None = None, end: float | None = None,
        fps: float | None = None,
    ) -> FrameFeatures:
        import torch

        fps = self.fps if fps is None else float(fps)
        frames = sample_frames(video_path, start, end, fps, max_height=self.config.max_height, colour=True)
        usable = [im for im in frames.images if im is not None]  # a prefix: only the tail can lack an image
        t0 = float(frames.start[0]) if len(frames.start) else 0.0
        if not usable:
            return map_pyfeat_frame(pd.DataFrame(columns=["frame", *REQUIRED_COLUMNS]), fps, t0, len(frames.start))
        batch = torch.from_numpy(np.stack(usable)).permute(0, 3, 1, 2).float()  # (N, 3, H, W), 0..255
        try:
            df = _detector(self.config).detect(
                batch, data_type="tensor", batch_size=self.config.batch_size, progress_bar=False,
                face_detection_threshold=self.config.face_detection_threshold,
            )
        except Exception as exc:
            raise PipelineError(f"{video_path}: py-feat detection failed ({type(exc).__name__}: {exc})", stage=STAGE,
                                source_path=str(video_path)) from exc
        return map_pyfeat_frame(pd.DataFrame(df), fps, t0, len(frames.start), self.config.main_face)


