"""Acoustic frame vectors from a self-supervised speech model in a local folder: wav2vec 2.0, HuBERT, Data2Vec-Audio
(what the MMoLRE paper uses for audio, d=768), through transformers, offline.

One hidden layer (`layer`: 0 is the feature projection's output, N the N-th transformer layer, -1 the last) gives a
frame per convolution stride (20 ms for these models), each covering the feature encoder's receptive field
(25 ms), in seconds of the source file; the collapse onto words treats them like openSMILE's frames. The
segment's samples are normalised as the folder's `preprocessor_config.json` says (`do_normalize`) and read in
pieces of at most `max_seconds` (the attention is quadratic in length).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from feature_schemas import FeatureSet

from ..errors import PipelineError
from ..media import SAMPLE_RATE
from ..records import FrameFeatures
from .base import FrameExtractor, SegmentMedia, available, empty_frames, package_version
from .registry import register
from .text import WEIGHT_FILES

STAGE = "audio"


@dataclass(frozen=True)
class AudioModelConfig:
    """`model_path`: the model folder (save_pretrained's). `name`: the set's name in the store ("": audio_<folder>).
    `level` is accepted for the build's shared settings: these models give frames only."""

    model_path: str | None = None
    layer: int = -1
    name: str = ""
    max_seconds: float = 30.0
    threads: int | None = None
    level: str = "lld"


def _meta(path: str) -> dict[str, Any]:
    return json.loads((Path(path) / "config.json").read_text())


@lru_cache(maxsize=8)
def _geometry(path: str) -> tuple[float, float]:
    """`frame_geometry` of the model folder's config, read once per process (not once per segment)."""
    return frame_geometry(_meta(path))


def frame_geometry(meta: dict[str, Any]) -> tuple[float, float]:
    """(stride, receptive field) of the convolutional feature encoder, in seconds."""
    stride, field = 1, 1
    for k, s in zip(meta.get("conv_kernel", (10, 3, 3, 3, 3, 2, 2)), meta.get("conv_stride", (5, 2, 2, 2, 2, 2, 2)),
                    strict=True):
        field += (k - 1) * stride
        stride *= s
    return stride / SAMPLE_RATE, field / SAMPLE_RATE


def checked_folder(config: AudioModelConfig) -> str:
    """The model folder with a config and weights, or PipelineError naming what is missing (one line)."""
    if not config.model_path:
        raise PipelineError("the transformers audio encoder needs a model folder: --audio-model PATH (a wav2vec2, "
                            "HuBERT or Data2Vec-Audio folder written by save_pretrained)", stage=STAGE)
    folder = Path(config.model_path)
    if not (folder / "config.json").is_file():
        raise PipelineError(f"audio model {folder} has no config.json: not a transformers model folder", stage=STAGE,
                            source_path=str(folder))
    if not any((folder / w).is_file() for w in WEIGHT_FILES):
        raise PipelineError(f"audio model {folder} has no weights ({' or '.join(WEIGHT_FILES)})", stage=STAGE,
                            source_path=str(folder))
    return str(folder.resolve())


@lru_cache(maxsize=2)
def _model(path: str) -> tuple[Any, bool]:
    """(model, normalise) loaded once per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise PipelineError(f"cannot load audio model from {path}: {str(e).splitlines()[0]}", stage=STAGE,
                            source_path=path) from None
    model.eval()
    pre = Path(path) / "preprocessor_config.json"
    normalise = bool(json.loads(pre.read_text()).get("do_normalize", True)) if pre.is_file() else True
    return model, normalise


@lru_cache(maxsize=8)
def audio_model_feature_set(path: str, layer: int, name: str, max_seconds: float) -> FeatureSet:
    """The set's description, read once per configuration (`extract` asks for its dimension every segment)."""
    meta = _meta(path)
    layers = int(meta["num_hidden_layers"])
    if not -layers - 1 <= layer <= layers:
        raise PipelineError(f"audio model {path}: layer {layer} does not exist (0..{layers}, or -1 the last)",
                            stage=STAGE)
    stride, field = frame_geometry(meta)
    name = name or "audio_" + (re.sub(r"[^a-z0-9]+", "_", Path(path).name.lower()).strip("_") or "model")
    return FeatureSet(
        name=name, dims=tuple(f"h{i:03d}" for i in range(int(meta["hidden_size"]))), modality="audio",
        extractor="transformers", extractor_version=package_version("transformers"),
        config={"model": Path(path).name, "model_type": meta.get("model_type"), "layers": layers, "layer": layer,
                "frame_seconds": field, "max_seconds": max_seconds},
        frame_rate=round(1.0 / stride, 6),
        description=f"hidden states of layer {layer} of a self-supervised speech model, one frame every "
                    f"{stride * 1000:.0f} ms covering {field * 1000:.0f} ms",
    )


@register("audio", "transformers-audio")
class TransformersAudioEncoder(FrameExtractor):
    """One hidden layer of a local wav2vec2 / HuBERT / Data2Vec-Audio model every 20 ms (`--audio-model`, `--audio-layer`)."""

    config_class = AudioModelConfig

    def availability(self) -> tuple[bool, str]:
        return available(("transformers", "torch"), lambda: checked_folder(self.config))

    def version(self) -> str:
        return package_version("transformers")

    def feature_set(self) -> FeatureSet:
        c = self.config
        return audio_model_feature_set(checked_folder(c), c.layer, c.name, c.max_seconds)

    def load(self) -> None:
        _model(checked_folder(self.config))

    def extract(self, media: SegmentMedia) -> FrameFeatures:
        import torch

        dim = self.feature_set().dim
        if media.audio is None or len(media.audio) < SAMPLE_RATE // 20:
            return empty_frames(dim)
        path = checked_folder(self.config)
        model, normalise = _model(path)
        stride, field = _geometry(path)
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        step = int(self.config.max_seconds * SAMPLE_RATE)
        values, starts = [], []
        for a in range(0, len(media.audio), step):
            piece = np.asarray(media.audio[a: a + step], np.float32)
            if len(piece) < SAMPLE_RATE // 20:  # shorter than the receptive field of a few frames
                continue
            if normalise:
                piece = (piece - piece.mean()) / np.sqrt(piece.var() + 1e-7)
            with torch.inference_mode():
                hidden = model(torch.from_numpy(piece)[None], output_hidden_states=True).hidden_states[self.config.layer]
            h = hidden[0].float().numpy()
            values.append(h)
            starts.append(a / SAMPLE_RATE + stride * np.arange(len(h)))
        if not values:
            return empty_frames(dim)
        start = media.start + np.concatenate(starts)
        return FrameFeatures(start, start + field, np.concatenate(values).astype(np.float32))
