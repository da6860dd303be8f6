"""Expression geometry, action-unit estimates and face crops from MediaPipe's 468-point face mesh.

Every distance is measured after rotating the points so the eye line is horizontal, divided by the
inter-ocular distance (IOD: between the eye centres, each the mean of its six points); y points down, so
"above" is a smaller y. Right/left are the subject's (the subject's right eye is on the image left). Mesh
indices are MediaPipe's canonical ones. EXPRESSION_DOC and AU_DOC give each dimension's formula; they travel
into the feature set's description.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Eyes in the order p1..p6 of the eye aspect ratio: corner, upper lid x2, other corner, lower lid x2.
RIGHT_EYE = (33, 160, 158, 133, 153, 144)
LEFT_EYE = (362, 385, 387, 263, 373, 380)
RIGHT_BROW = (70, 63, 105, 66, 107)  # upper brow line, outer to inner
LEFT_BROW = (300, 293, 334, 296, 336)
INNER_LIP_TOP, INNER_LIP_BOTTOM = 13, 14
MOUTH_RIGHT, MOUTH_LEFT = 61, 291
UPPER_LIP_TOP, SUBNASALE, NOSE_TIP, CHIN = 0, 2, 1, 152
INNER_LIPS = ((82, 87), (13, 14), (312, 317))  # inner-lip (upper, lower) pairs, right to left
INNER_MOUTH_CORNERS = (78, 308)
TYPICAL_OPEN_EAR = 0.3  # eye aspect ratio of an open eye (au45 is 0 there, 1 for a closed eye)

EXPRESSION_DOC: dict[str, str] = {
    "eye_open_l": "eye aspect ratio of the left eye: (|p2-p6| + |p3-p5|) / (2 |p1-p4|), points 362,385,387,263,373,380",
    "eye_open_r": "eye aspect ratio of the right eye, points 33,160,158,133,153,144",
    "brow_raise_l": "mean height of the left upper brow line (300,293,334,296,336) above the left eye centre / IOD",
    "brow_raise_r": "mean height of the right upper brow line (70,63,105,66,107) above the right eye centre / IOD",
    "brow_gap": "distance between the inner brow ends (107, 336) / IOD; falls when frowning (AU4)",
    "mouth_open": "inner-lip gap (13 to 14) / IOD (AU25/26)",
    "mouth_width": "lip-corner distance (61 to 291) / IOD; grows with lip-corner pull (AU12) and stretch (AU20)",
    "lip_corner_raise": "height of the lip corners (61, 291) above the mid-lip point (13+14)/2 / IOD; > 0 smiling",
    "nose_lip_gap": "subnasale (2) to upper-lip top (0) / IOD; falls when the upper lip is raised (AU10, disgust)",
    "jaw_open": "subnasale (2) to chin (152) / IOD; grows with a jaw drop (AU26/27)",
}
EXPRESSION_DIMS: tuple[str, ...] = tuple(EXPRESSION_DOC)

AU_DOC: dict[str, str] = {
    "au01_02": "AU1/2 brow raise: mean height of both upper brow lines (70,63,105,66,107 / 300,293,334,296,336) "
               "above the line through that eye's corners (33,133 / 362,263) / IOD",
    "au04": "AU4 brow lower: -(mean height of the inner brow ends 107, 336 above the inner eye corners 133, 362 "
            "+ distance 107 to 336) / IOD; rises as the brows come down and together",
    "au12": "AU12 lip-corner pull: half the lip-corner distance (61 to 291) minus the corners' mean depth below "
            "the subnasale (2) / IOD; rises as the corners move out and up",
    "au15": "AU15 lip-corner depress: mean depth of the lip corners (61, 291) below the upper inner-lip centre "
            "(13) / IOD; rises as the corners are pulled down",
    "au25_26": "AU25/26 lips part, jaw drop: inner-mouth aspect ratio, mean of the inner-lip gaps 82-87, 13-14, "
               "312-317 over the inner mouth width 78-308",
    "au45": f"AU45 blink: 1 - mean eye aspect ratio of both eyes / {TYPICAL_OPEN_EAR} (0 open, 1 closed)",
}
AU_DIMS: tuple[str, ...] = tuple(AU_DOC)


def rotate_level(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Points centred on the eyes' midpoint, rotated so the eye line is horizontal, divided by the IOD; and the
    eye line's angle in radians (image axes)."""
    r, left = points[list(RIGHT_EYE)].mean(axis=0), points[list(LEFT_EYE)].mean(axis=0)
    d = left - r
    iod = float(np.hypot(*d))
    angle = math.atan2(d[1], d[0])
    if not np.isfinite(iod) or iod <= 1e-9:
        return np.full_like(points, np.nan), angle
    c, s = math.cos(-angle), math.sin(-angle)
    rot = np.array([[c, s], [-s, c]])
    return ((points - (r + left) / 2.0) @ rot) / iod, angle


def _ear(p: np.ndarray, idx: tuple[int, ...]) -> float:
    p1, p2, p3, p4, p5, p6 = (p[i] for i in idx)
    width = float(np.hypot(*(p4 - p1)))
    return float((np.hypot(*(p2 - p6)) + np.hypot(*(p3 - p5))) / (2.0 * width)) if width > 1e-9 else math.nan


def _dist(p: np.ndarray, a: int, b: int) -> float:
    return float(np.hypot(*(p[a] - p[b])))


def expression_geometry(points: np.ndarray) -> np.ndarray:
    """EXPRESSION_DIMS then AU_DIMS of a (468, 2) mesh in pixels (formulas in EXPRESSION_DOC, AU_DOC)."""
    p, _ = rotate_level(np.asarray(points, dtype=np.float64))
    y = p[:, 1]
    eye_r_y, eye_l_y = y[list(RIGHT_EYE)].mean(), y[list(LEFT_EYE)].mean()
    mid_lip_y = (y[INNER_LIP_TOP] + y[INNER_LIP_BOTTOM]) / 2.0
    corners_y = (y[MOUTH_RIGHT] + y[MOUTH_LEFT]) / 2.0
    ear_l, ear_r = _ear(p, LEFT_EYE), _ear(p, RIGHT_EYE)
    brow_gap, width = _dist(p, RIGHT_BROW[-1], LEFT_BROW[-1]), _dist(p, MOUTH_RIGHT, MOUTH_LEFT)
    corner_line_r, corner_line_l = (y[33] + y[133]) / 2.0, (y[362] + y[263]) / 2.0
    inner_brow_h = ((y[133] - y[RIGHT_BROW[-1]]) + (y[362] - y[LEFT_BROW[-1]])) / 2.0
    inner_gap = np.mean([_dist(p, a, b) for a, b in INNER_LIPS])
    inner_width = _dist(p, *INNER_MOUTH_CORNERS)
    return np.array([
        ear_l, ear_r,
        eye_l_y - y[list(LEFT_BROW)].mean(), eye_r_y - y[list(RIGHT_BROW)].mean(),
        brow_gap,
        _dist(p, INNER_LIP_TOP, INNER_LIP_BOTTOM),
        width,
        mid_lip_y - corners_y,
        _dist(p, SUBNASALE, UPPER_LIP_TOP),
        _dist(p, SUBNASALE, CHIN),
        # action units
        ((corner_line_r - y[list(RIGHT_BROW)].mean()) + (corner_line_l - y[list(LEFT_BROW)].mean())) / 2.0,
        -(inner_brow_h + brow_gap),
        width / 2.0 - (corners_y - y[SUBNASALE]),
        corners_y - y[INNER_LIP_TOP],
        inner_gap / inner_width if inner_width > 1e-9 else math.nan,
        1.0 - (ear_l + ear_r) / 2.0 / TYPICAL_OPEN_EAR,
    ], dtype=np.float64)


def face_crop(rgb: np.ndarray, points: np.ndarray, margin: float, size: int, grey: bool) -> np.ndarray:
    """A size x size crop of the face: the mesh's bounding box made square, `margin` of its side added on each
    side, rotated about its centre so the eyes are level (one affine warp, edge pixels replicated); grey or RGB."""
    _, angle = rotate_level(points)
    lo, hi = points.min(axis=0), points.max(axis=0)
    centre = (lo + hi) / 2.0
    side = float(max(hi - lo)) * (1.0 + 2.0 * margin)
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), math.degrees(angle), size / max(side, 1.0))
    m[:, 2] += size / 2.0 - centre
    crop = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if grey:
        return cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    return crop if crop.ndim == 3 else cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB)

