"""Face geometry from 68 landmarks (iBUG/dlib/OpenFace order): normalised shape, head pose, expression cues.

Every backend that yields 68 landmarks shares these definitions, so a `lm_x_07` or `eye_open_l` means the
same thing whichever detector produced the points. Left/right are the subject's, not the image's: the
subject's right eye is points 36-41 (image left), the left eye 42-47.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

N_LANDMARKS = 68

RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)
RIGHT_BROW = slice(17, 22)
LEFT_BROW = slice(22, 27)

LANDMARK_DIMS: tuple[str, ...] = tuple(f"lm_x_{i:02d}" for i in range(N_LANDMARKS)) + tuple(
    f"lm_y_{i:02d}" for i in range(N_LANDMARKS)
)
POSE_DIMS: tuple[str, ...] = ("pose_pitch", "pose_yaw", "pose_roll")
EXPRESSION_DIMS: tuple[str, ...] = (
    "eye_open_l",  # mean lid gap / eye width (eye aspect ratio), subject's left eye
    "eye_open_r",
    "brow_raise_l",  # mean brow height above the eye centre / inter-ocular distance
    "brow_raise_r",
    "brow_gap",  # distance between the inner brow ends / inter-ocular distance (low when frowning)
    "mouth_open",  # inner-lip gap / inter-ocular distance
    "mouth_width",  # lip-corner distance / inter-ocular distance
    "lip_corner_raise",  # lip corners above the mid-lip line / inter-ocular distance (smile > 0)
)

# A generic face (arbitrary units; only the shape matters for rotation) in camera-like axes (x to the image right, y down, z away from the camera),
# nose tip at the origin. A frontal face looking into the camera has rotation zero, so the angles read as
# pitch (nod, + = chin down), yaw (turn, + = towards the image right) and roll (in-plane tilt, + = clockwise).
_MODEL_POINTS = np.array(
    [
        (0.0, 0.0, 0.0),  # 30 nose tip
        (0.0, 330.0, 65.0),  # 8 chin
        (-225.0, -170.0, 135.0),  # 36 right eye, outer corner
        (225.0, -170.0, 135.0),  # 45 left eye, outer corner
        (-150.0, 150.0, 125.0),  # 48 right mouth corner
        (150.0, 150.0, 125.0),  # 54 left mouth corner
    ],
    dtype=np.float64,
)
_MODEL_INDEX = (30, 8, 36, 45, 48, 54)


def _check(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (N_LANDMARKS, 2):
        raise ValueError(f"expected ({N_LANDMARKS}, 2) landmarks, got {pts.shape}")
    return pts


def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right eye centre, left eye centre), each the mean of its six points."""
    pts = _check(points)
    return pts[RIGHT_EYE].mean(axis=0), pts[LEFT_EYE].mean(axis=0)


def interocular(points: np.ndarray) -> float:
    """Distance between the eye centres: the face's own scale, independent of image size and distance."""
    r, left = eye_centres(points)
    return float(np.linalg.norm(left - r))


def normalise_landmarks(points: np.ndarray) -> np.ndarray:
    """Centre on the landmarks' mean and divide by the inter-ocular distance, so the shape no longer depends on
    where the face sits in the frame or how large it is. Returns (68, 2); NaN when the eyes coincide."""
    pts = _check(points)
    iod = interocular(pts)
    if not np.isfinite(iod) or iod <= 1e-9:
        return np.full_like(pts, np.nan)
    return (pts - pts.mean(axis=0)) / iod


def flatten_landmarks(normalised: np.ndarray) -> np.ndarray:
    """(68, 2) -> 136 values in LANDMARK_DIMS order (all x, then all y)."""
    return np.concatenate([normalised[:, 0], normalised[:, 1]])


def head_pose(points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(pitch, yaw, roll) in degrees from 2-D landmarks, by fitting a generic 3-D face with cv2.solvePnP.

    `image_size` is (height, width) of the image the points are in; the camera is assumed to have a focal length
    equal to the image width and its centre in the middle (no calibration is available for web video).
    NaN when the fit fails."""
    return head_pose_from_six(_check(points)[list(_MODEL_INDEX)], image_size)


def head_pose_from_six(image_points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(pitch, yaw, roll) in degrees from the six points of the generic face, in this order: nose tip, chin,
    right eye outer corner, left eye outer corner, right mouth corner, left mouth corner (pixels). Any
    landmark scheme with those six points (68-point, MediaPipe's mesh) gets the same angles."""
    h, w = image_size
    camera = np.array([[w, 0.0, w / 2.0], [0.0, w, h / 2.0], [0.0, 0.0, 1.0]], dtype=np.float64)
    image_points = np.asarray(image_points, dtype=np.float64).reshape(6, 2)
    ok, rvec, _tvec = cv2.solvePnP(_MODEL_POINTS, image_points, camera, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return np.full(3, np.nan)
    rot, _ = cv2.Rodrigues(rvec)
    return rotation_to_euler(rot)


def rotation_to_euler(rot: np.ndarray) -> np.ndarray:
    """(pitch, yaw, roll) in degrees of R = Rz(roll) @ Ry(yaw) @ Rx(pitch), the convention OpenFace reports."""
    sy = math.hypot(rot[0, 0], rot[1, 0])
    if sy > 1e-6:
        pitch = math.atan2(rot[2, 1], rot[2, 2])
        yaw = math.atan2(-rot[2, 0], sy)
        roll = math.atan2(rot[1, 0], rot[0, 0])
    else:  # gimbal lock: yaw at +-90 degrees
        pitch = math.atan2(-rot[1, 2], rot[1, 1])
        yaw = math.atan2(-rot[2, 0], sy)
        roll = 0.0
    return np.degrees([pitch, yaw, roll])


def _roll_aligned(points: np.ndarray) -> np.ndarray:
    """Normalised points rotated so the eye line is horizontal: vertical cues then ignore head tilt."""
    pts = normalise_landmarks(points)
    r, left = pts[RIGHT_EYE].mean(axis=0), pts[LEFT_EYE].mean(axis=0)
    angle = math.atan2(left[1] - r[1], left[0] - r[0])
    c, s = math.cos(-angle), math.sin(-angle)
    return pts @ np.array([[c, s], [-s, c]])


def _eye_aspect(eye: np.ndarray) -> float:
    width = np.linalg.norm(eye[3] - eye[0])
    gap = (np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])) / 2.0
    return float(gap / width) if width > 1e-9 else math.nan


def expression_descriptors(points: np.ndarray) -> np.ndarray:
    """Geometric expression cues in EXPRESSION_DIMS order, scale- and tilt-free (image y points down, so
    "above" is a smaller y)."""
    p = _roll_aligned(points)
    eye_r, eye_l = p[RIGHT_EYE], p[LEFT_EYE]
    brow_raise_l = float(eye_l[:, 1].mean() - p[LEFT_BROW][:, 1].mean())
    brow_raise_r = float(eye_r[:, 1].mean() - p[RIGHT_BROW][:, 1].mean())
    brow_gap = float(np.linalg.norm(p[22] - p[21]))
    mouth_open = float(np.linalg.norm(p[66] - p[62]))
    mouth_width = float(np.linalg.norm(p[54] - p[48]))
    mid_lip = (p[62, 1] + p[66, 1]) / 2.0
    lip_corner_raise = float(mid_lip - (p[48, 1] + p[54, 1]) / 2.0)
    return np.array(
        [_eye_aspect(eye_l), _eye_aspect(eye_r), brow_raise_l, brow_raise_r, brow_gap, mouth_open, mouth_width,
         lip_corner_raise],
        dtype=np.float64,
    )
