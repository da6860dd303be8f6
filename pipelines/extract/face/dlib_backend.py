"""The default, offline face backend: dlib's HOG face detector and 68-point shape predictor.

Per frame interval: detect faces on a grey frame scaled to at most `detect_height` rows (HOG cost grows with
pixels; 360 rows keeps it near 15 ms), keep the main face, fit 68 landmarks, and derive the normalised shape,
head pose and geometric expression cues (see geometry.py). Frames without a face are invalid with values 0.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np

import feature_schemas

from ...errors import PipelineError
from ...records import FrameFeatures
from ..registry import register
from . import geometry
from .base import STAGE, FaceBackend, invalid_frames
from .frames import sample_frames

DIMS: tuple[str, ...] = (
    geometry.LANDMARK_DIMS + geometry.POSE_DIMS + geometry.EXPRESSION_DIMS + ("face_found", "face_score")
)


@dataclass(frozen=True)
class DlibConfig:
    fps: float = 5.0  # frame intervals per second of video
    detect_height: int | None = 360  # frames taller than this are scaled down first; None keeps full size
    upsample: int = 0  # dlib pyramid upsampling: 1 finds faces down to ~40 px but costs ~4x
    main_face: str = "largest"  # "largest" box, or highest detection "score"
    min_score: float = 0.0  # dlib's adjust_threshold: detections scoring below it are dropped
    predictor_path: str | None = None  # 68-point model; default: face_recognition_models' copy
    feature_set_name: str = "face_dlib"

    def __post_init__(self) -> None:
        if self.main_face not in ("largest", "score"):
            raise PipelineError(f"dlib face backend: main_face must be 'largest' or 'score', not {self.main_face!r}",
                                stage=STAGE)
        if self.fps <= 0:
            raise PipelineError(f"dlib face backend: fps must be positive, got {self.fps}", stage=STAGE)


@dataclass
class FaceObservation:
    """The main face of one image: box (left, top, right, bottom) and landmarks (68, 2) in the input image's
    pixels, the detector's raw score, its [0, 1] confidence, and the feature vector in DIMS order."""

    box: tuple[float, float, float, float]
    score: float
    confidence: float
    landmarks: np.ndarray
    values: np.ndarray
    n_faces: int


def default_predictor_path() -> str:
    with warnings.catch_warnings():  # face_recognition_models still imports pkg_resources
        warnings.simplefilter("ignore")
        import face_recognition_models

    return face_recognition_models.pose_predictor_model_location()


@functools.lru_cache(maxsize=4)
def _models(predictor_path: str) -> tuple[dlib.fhog_object_detector, dlib.shape_predictor]:
    """Detector and shape predictor, loaded once per process."""
    if not Path(predictor_path).is_file():
        raise PipelineError(f"{predictor_path}: dlib 68-point shape predictor not found", stage=STAGE,
                            source_path=predictor_path)
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(predictor_path)


def score_to_confidence(score: float) -> float:
    """dlib's HOG score is an SVM margin (0 at its threshold, ~3 for a clear frontal face); a logistic maps it
    to (0, 1) with 0.5 at the threshold."""
    return 1.0 / (1.0 + math.exp(-2.0 * score))


@register("face", "dlib")
class DlibBackend(FaceBackend):
    """68 landmarks, head pose and expression geometry (offline)."""

    config_class = DlibConfig

    def availability(self) -> tuple[bool, str]:
        try:
            path = self._predictor_path
        except ImportError:
            return False, "python package 'face_recognition_models' (the 68-point shape predictor) is not installed"
        if not Path(path).is_file():
            return False, f"{path}: dlib 68-point shape predictor not found"
        return True, ""

    def load(self) -> None:
        _models(self._predictor_path)

    @property
    def _predictor_path(self) -> str:
        return self.config.predictor_path or default_predictor_path()

    def feature_set(self) -> feature_schemas.FeatureSet:
        return feature_schemas.FeatureSet(
            name=self.config.feature_set_name,
            dims=DIMS,
            modality="visual",
            extractor="dlib-hog+shape68",
            extractor_version=str(dlib.__version__),
            config=self.config_dict(),
            frame_rate=self.fps,
            description=(
                "Main face per frame (dlib HOG detector, 68-point shape predictor): landmarks centred on their "
                "mean and divided by the inter-ocular distance (lm_x_*, lm_y_*), head pose in degrees from "
                "cv2.solvePnP with a generic 3-D face (pose_pitch/yaw/roll), geometric expression cues in "
                "inter-ocular units, face_found and the detector's score mapped to [0, 1] (face_score). Left/right "
                "are the subject's. Frames without a face are invalid and 0."
            ),
        )

    def observe(self, grey: np.ndarray) -> FaceObservation | None:
        """The main face of an 8-bit grey (or RGB) image, or None; coordinates in that image's pixels."""
        detector, predictor = _models(self._predictor_path)
        grey = np.ascontiguousarray(grey)  # dlib reads the buffer as if contiguous, whatever the strides
        rects, scores, _ = detector.run(grey, self.config.upsample, self.config.min_score)
        if len(rects) == 0:
            return None
        if self.config.main_face == "largest":  # HOG boxes come in few sizes: break ties by score
            best = max(range(len(rects)), key=lambda i: (rects[i].area(), scores[i]))
        else:
            best = max(range(len(rects)), key=lambda i: scores[i])
        rect, score = rects[best], float(scores[best])
        shape = predictor(grey, rect)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        norm = geometry.normalise_landmarks(points)
        values = np.concatenate([
            geometry.flatten_landmarks(norm),
            geometry.head_pose(points, grey.shape[:2]),
            geometry.expression_descriptors(points),
            [1.0, score_to_confidence(score)],
        ])
        if not np.all(np.isfinite(values)):
            return None
        box = (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))
        return FaceObservation(box, score, score_to_confidence(score), points, values.astype(np.float32), len(rects))

    def extract_video(
        self, video_path: str | os.PathLike[str], start: float | None = None, end: float | None = None,
        fps: float | None = None,
    ) -> FrameFeatures:
        fps = self.fps if fps is None else float(fps)
        frames = sample_frames(video_path, start, end, fps, max_height=self.config.detect_height)
        out = invalid_frames(frames.start, frames.end, len(DIMS))
        last_id, last_obs = None, None
        for i, image in enumerate(frames.images):
            if image is None:
                continue
            if id(image) != last_id:  # intervals showing the same decoded frame share one analysis
                last_id, last_obs = id(image), self.observe(image)
            if last_obs is not None:
                out.values[i], out.valid[i], out.confidence[i] = last_obs.values, True, last_obs.confidence
        return out
