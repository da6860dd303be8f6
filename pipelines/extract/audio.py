"""Acoustic features with openSMILE: eGeMAPSv02 (25 LLDs, the default) or ComParE_2016 (65), LLDs or functionals.

Frame intervals come from openSMILE's own index (each frame's start and end), shifted by the segment's start
in the video, so the collapse onto words uses the window each value was computed over. Dimension names are
openSMILE's column names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from feature_schemas import FeatureSet

from ..errors import PipelineError
from ..media import SAMPLE_RATE
from ..records import FrameFeatures
from .base import FrameExtractor, Kind, SegmentMedia, empty_frames, importable

if TYPE_CHECKING:
    import opensmile


_SETS = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}
_LEVELS = {"lld": "LowLevelDescriptors", "functionals": "Functionals"}


@dataclass(frozen=True)
class AudioConfig:
    """`feature_set` egemaps | compare; `level` lld (frames every 10 ms) | functionals (one vector per segment)."""

    feature_set: str = "egemaps"
    level: str = "lld"

    def __post_init__(self) -> None:
        if self.feature_set not in _SETS:
            raise ValueError(f"audio feature_set {self.feature_set!r}: choose one of {', '.join(_SETS)}")
        if self.level not in _LEVELS:
            raise ValueError(f"audio level {self.level!r}: choose one of {', '.join(_LEVELS)}")

    @property
    def name(self) -> str:
        """The feature set's name in the store: egemaps, compare, egemaps_functionals, compare_functionals."""
        return self.feature_set if self.level == "lld" else f"{self.feature_set}_{self.level}"


@lru_cache(maxsize=4)
def smile(feature_set: str = "egemaps", level: str = "lld") -> opensmile.Smile:
    """One openSMILE extractor per process and configuration (building it parses the config, ~0.2 s)."""
    import opensmile

    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, _SETS[feature_set]),
                           feature_level=getattr(opensmile.FeatureLevel, _LEVELS[level]))


def audio_feature_set(config: AudioConfig = AudioConfig()) -> FeatureSet:
    import opensmile

    s = smile(config.feature_set, config.level)
    return FeatureSet(
        name=config.name,
        dims=tuple(s.feature_names),
        modality="audio",
        extractor="opensmile",
        extractor_version=opensmile.__version__,
        config={**asdict(config), "opensmile_feature_set": _SETS[config.feature_set],
                "opensmile_level": _LEVELS[config.level], "sample_rate": SAMPLE_RATE},
        frame_rate=100.0 if config.level == "lld" else None,
        description=f"openSMILE {_SETS[config.feature_set]} {_LEVELS[config.level]} of 16 kHz mono audio",
    )


def extract_audio(samples: np.ndarray | None, offset: float = 0.0, config: AudioConfig = AudioConfig(),
                  rate: int = SAMPLE_RATE, item_id: str | None = None) -> FrameFeatures:
    """Frames of `samples` (sample 0 at `offset` seconds of the video). No samples: zero frames.
    Frames with a non-finite value are marked invalid (too-short input gives openSMILE's NaN row)."""
    s = smile(config.feature_set, config.level)
    dim = len(s.feature_names)
    if samples is None or len(samples) == 0:
        return empty_frames(dim)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Segment too short, filling with NaN": masked below
            df = s.process_signal(np.asarray(samples, np.float32), rate)
    except Exception as e:  # openSMILE raises its own error types from C
        raise PipelineError(f"openSMILE failed on {len(samples) / rate:.2f} s of audio: {e}", stage="audio",
                            item_id=item_id) from e
    starts = df.index.get_level_values("start").total_seconds().to_numpy(np.float64) + offset
    ends = df.index.get_level_values("end").total_seconds().to_numpy(np.float64) + offset
    values = df.to_numpy(np.float32)
    return FrameFeatures(starts, ends, values, valid=np.isfinite(values).all(axis=1))


def functionals_feature_set(config: AudioConfig = AudioConfig()) -> FeatureSet:
    """openSMILE functionals of the whole segment as an utterance-level set (schema 2): eGeMAPSv02 gives 88."""
    from dataclasses import replace

    fs = audio_feature_set(AudioConfig(config.feature_set, "functionals"))
    return replace(fs, level="utterance", description=fs.description + ", one vector per segment")


def extract_functionals(samples: np.ndarray | None, config: AudioConfig = AudioConfig(), rate: int = SAMPLE_RATE,
                        item_id: str | None = None) -> np.ndarray | None:
    """The segment's functionals (D,), or None when there is no audio or openSMILE gives no finite row
    (the writer then marks the set absent for this segment)."""
    fr = extract_audio(samples, 0.0, AudioConfig(config.feature_set, "functionals"), rate, item_id)
    if len(fr.values) == 0 or not bool(fr.valid[0]):
        return None
    return fr.values[0]


class OpenSmileExtractor(FrameExtractor):
    """openSMILE frames of a segment's audio (none without audio); with LLDs, the segment's functionals as its
    utterance-level vector. Registered once per openSMILE feature set: `egemaps`, `compare`."""

    kind: ClassVar[Kind] = "audio"
    config_class = AudioConfig

    def __init__(self, config: AudioConfig | None = None) -> None:
        super().__init__(config)
        if self.config.feature_set != self.name:
            raise PipelineError(f"audio extractor {self.name!r} computes the {self.name} set, not "
                                f"{self.config.feature_set!r}", stage="audio")

    def availability(self) -> tuple[bool, str]:
        return importable("opensmile")

    def feature_set(self) -> FeatureSet:
        return audio_feature_set(self.config)

    def extract(self, media: SegmentMedia) -> FrameFeatures:
        return extract_audio(media.audio, media.start, self.config, item_id=media.segment_id)

    def utterance_set(self) -> FeatureSet | None:
        """None when the frames already are functionals (the word-level set is `<set>_functionals`)."""
        return functionals_feature_set(self.config) if self.config.level != "functionals" else None

    def utterance(self, media: SegmentMedia, frames: FrameFeatures) -> np.ndarray | None:
        if self.config.level == "functionals":
            return None
        return extract_functionals(media.audio, self.config, item_id=media.segment_id)


class EgemapsExtractor(OpenSmileExtractor):
    name = "egemaps"
    defaults: ClassVar[dict[str, Any]] = {"feature_set": "egemaps"}


class CompareExtractor(OpenSmileExtractor):
    name = "compare"
    defaults: ClassVar[dict[str, Any]] = {"feature_set": "compare"}
