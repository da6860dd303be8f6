"""Turning command-line and flow parameters into the typed configurations of `pipelines` and `mmolre`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def build_config(mode: str = "weighted", fill: str = "zeros", keep_frames: bool = False, units_per_shard: int = 16) -> Any:
    """The store writer's settings; a shard groups `units_per_shard` units (SDK: 4 videos each; videos: 1 each)."""
    from pipelines.collapse import CollapseConfig
    from pipelines.store_writer import BuildConfig

    return BuildConfig(collapse=CollapseConfig(mode=mode, fill=fill), keep_frames=keep_frames, units_per_shard=units_per_shard)


def video_config(face: str | None = "mediapipe", fps: float | None = None, asr_model: str | None = None,
                 text_model: str | None = None) -> Any:
    """A VideoConfig where None keeps the default; face "none" or None skips the face modality."""
    from pipelines.recipes.videos import VideoConfig

    settings: dict[str, Any] = {"face": None if face in (None, "none") else face}
    settings |= {k: v for k, v in {"fps": fps, "asr_model": asr_model, "text_model": text_model}.items() if v is not None}
    return VideoConfig(**settings)


def model_name(name: str, task: str | None = None) -> str:
    """CLI spellings (hard-sharing, dense-moe, single-task --task emotion) -> mmolre's model names."""
    name = name.replace("-", "_")
    if name == "single_task":
        return f"single_{task or 'sentiment'}"
    return name


def train_config(config_file: str | None, overrides: Sequence[str] = (), **settings: Any) -> Any:
    """TrainConfig from a YAML/JSON file (or defaults), then `key=value` overrides; None settings are skipped."""
    from mmolre.config import TrainConfig

    config = TrainConfig.load(config_file) if config_file else TrainConfig()
    pairs = [f"{k}={v}" for k, v in settings.items() if v is not None] + list(overrides)
    return config.with_overrides(pairs) if pairs else config
