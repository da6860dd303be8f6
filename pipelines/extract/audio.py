"""Acoustic features with openSMILE: eGeMAPSv02 (25 LLDs, the default) or ComParE_2016 (65), LLDs or functionals.

Frame intervals come from openSMILE's own index (each frame's start and end), shifted by the segment's start
in the video, so the collapse onto words uses the window each value was computed over. Dimension names are
openSMILE's column names.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from feature_schemas import FeatureSet

from ..errors import PipelineError
from ..media import SAMPLE_RATE
from ..records import FrameFeatures
from .base import FrameExtractor, Kind, SegmentMedia, empty_frames, importable
from .registry import register

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


# openSMILE's own levels in its configs: LLDs and functionals (the `sinkLevel` of opensmile.FeatureLevel)
_SINKS = {"lld": "lld", "functionals": "func"}
# the two external sinks of opensmile's shared multi-level output config, by our level name
_MULTI_SINK = {"lld": "extsinklld", "functionals": "extsinkfunc"}


@lru_cache(maxsize=1)
def _config_root() -> str:
    import opensmile.core.smile
    from opensmile.core.config import config

    return os.path.join(os.path.dirname(os.path.realpath(opensmile.core.smile.__file__)), config.CONFIG_ROOT)


def _config_file(feature_set: str) -> str:
    from opensmile import FeatureSet as OpenSmileSet
    from opensmile.core.config import config

    return os.path.join(_config_root(), getattr(OpenSmileSet, _SETS[feature_set]).value + config.CONFIG_EXT)


def _options(sinks: str, **extra: object) -> dict[str, object]:
    """opensmile.Smile's options for its shipped configs, with the one-level (`single`) or the LLD + functionals
    (`multi`) external output."""
    from opensmile.core.config import config

    root = _config_root()
    out: dict[str, object] = {
        "sink": os.path.join(root, config.EXTERNAL_OUTPUT_MULTI_CONFIG if sinks == "multi"
                             else config.EXTERNAL_OUTPUT_SINGLE_CONFIG),
        "bufferModeRbConf": os.path.join(root, "shared/BufferModeRb.conf.inc"),
        "frameModeFunctionalsConf": os.path.join(root, "shared/FrameModeFunctionals.conf.inc"),
        "source": os.path.join(root, config.EXTERNAL_INPUT_CONFIG),
    }
    if sinks == "multi":
        out.update(sinkLevelLLD=_SINKS["lld"], sinkLevelFunc=_SINKS["functionals"])
    return {**out, **extra}


@lru_cache(maxsize=8)
def feature_names(feature_set: str = "egemaps", level: str = "lld") -> tuple[str, ...]:
    """openSMILE's column names of one set and level, read from its config (what `opensmile.Smile` reports,
    without building a Smile: its constructor scans every installed package's metadata, ~0.5 s a process)."""
    from opensmile.core.config import config
    from opensmile.core.lib import OpenSMILE

    lib = OpenSMILE()
    lib.initialize(config_file=_config_file(feature_set), options=_options("single", sinkLevel=_SINKS[level]))
    try:
        sink = config.EXTERNAL_OUTPUT_COMPONENT
        return tuple(lib.external_sink_get_element_name(sink, i) for i in range(lib.external_sink_get_num_elements(sink)))
    finally:
        lib.free()


def _seconds(values: list[float]) -> np.ndarray:
    """Seconds as opensmile.Smile's frame index holds them (pandas Timedelta, nanoseconds) and gives them back."""
    import pandas as pd

    return np.array(pd.to_timedelta(np.asarray(values, np.float64), "s").total_seconds(), np.float64)


def run_opensmile(samples: np.ndarray, feature_set: str = "egemaps",
                  rate: int = SAMPLE_RATE) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """LLD frames and the functionals of `samples` from one run of openSMILE: level -> (starts, ends, values).

    openSMILE's configs compute every level whichever one is read, so `opensmile.Smile` (one level per object)
    paid the whole computation twice for frames plus functionals. The input conversion, the frame times and the
    NaN row of a segment too short for any frame are those of `opensmile.Smile.process_signal`, value for value
    (tests/test_audio.py compares them)."""
    from opensmile.core.lib import OpenSMILE

    signal = np.atleast_2d(np.asarray(samples, np.float32))[0].copy()  # Smile's channel 0, as float32
    signal *= 32768
    pcm = signal.astype(np.int16)
    collected: dict[str, tuple[list, list, list]] = {level: ([], [], []) for level in _MULTI_SINK}
    lib = OpenSMILE()
    lib.initialize(config_file=_config_file(feature_set),
                   options=_options("multi", sampleRate=rate, nBits=16), loglevel=2)
    try:
        for level, component in _MULTI_SINK.items():
            lib.external_sink_set_callback_ex(component, _collect(*collected[level]))
        lib.external_audio_source_write_data("extsource", bytes(pcm))
        lib.external_audio_source_set_eoi("extsource")
        lib.run()
    finally:
        lib.free()
    duration = len(pcm) / rate
    out = {}
    for level, (values, starts, ends) in collected.items():
        if not values:  # too short for one frame: Smile's NaN row over the whole segment
            values, starts, ends = [np.full((1, len(feature_names(feature_set, level))), np.nan, np.float32)], [0.0], [duration]
        st, en = _seconds(starts), _seconds(ends)
        st[0], en[-1] = 0.0, _seconds([duration])[0]  # Smile's index spans the whole segment
        out[level] = (st, en, np.vstack(values).astype(np.float32, copy=False))
    return out


def _collect(values: list, starts: list, ends: list) -> Any:
    def callback(data: np.ndarray, meta: Any) -> None:
        values.append(data.copy())
        starts.append(meta.time)
        ends.append(meta.time + meta.lengthSec)

    return callback


def audio_feature_set(config: AudioConfig = AudioConfig()) -> FeatureSet:
    import opensmile

    return FeatureSet(
        name=config.name,
        dims=feature_names(config.feature_set, config.level),
        modality="audio",
        extractor="opensmile",
        extractor_version=opensmile.__version__,
        config={**asdict(config), "opensmile_feature_set": _SETS[config.feature_set],
                "opensmile_level": _LEVELS[config.level], "sample_rate": SAMPLE_RATE},
        frame_rate=100.0 if config.level == "lld" else None,
        description=f"openSMILE {_SETS[config.feature_set]} {_LEVELS[config.level]} of 16 kHz mono audio",
    )


def _smile_levels(samples: np.ndarray | None, offset: float, feature_set: str, rate: int,
                  item_id: str | None) -> dict[str, FrameFeatures] | None:
    """Both levels of `samples` as frames (sample 0 at `offset` seconds); None without samples. Frames with a
    non-finite value are marked invalid (too-short input gives openSMILE's NaN row)."""
    if samples is None or len(samples) == 0:
        return None
    try:
        levels = run_opensmile(samples, feature_set, rate)
    except Exception as e:  # openSMILE raises its own error types from C
        raise PipelineError(f"openSMILE failed on {len(samples) / rate:.2f} s of audio: {e}", stage="audio",
                            item_id=item_id) from e
    return {level: FrameFeatures(st + offset, en + offset, values, valid=np.isfinite(values).all(axis=1))
            for level, (st, en, values) in levels.items()}


def extract_audio(samples: np.ndarray | None, offset: float = 0.0, config: AudioConfig = AudioConfig(),
                  rate: int = SAMPLE_RATE, item_id: str | None = None) -> FrameFeatures:
    """Frames of `samples` at `config.level` (sample 0 at `offset` seconds of the video). No samples: zero
    frames. Frames with a non-finite value are marked invalid (too-short input gives openSMILE's NaN row)."""
    levels = _smile_levels(samples, offset, config.feature_set, rate, item_id)
    return empty_frames(len(feature_names(config.feature_set, config.level))) if levels is None else levels[config.level]


def _functionals_vector(frames: FrameFeatures) -> np.ndarray | None:
    return frames.values[0] if len(frames.values) and bool(frames.valid[0]) else None


def functionals_feature_set(config: AudioConfig = AudioConfig()) -> FeatureSet:
    """openSMILE functionals of the whole segment as an utterance-level set (schema 2): eGeMAPSv02 gives 88."""
    from dataclasses import replace

    fs = audio_feature_set(AudioConfig(config.feature_set, "functionals"))
    return replace(fs, level="utterance", description=fs.description + ", one vector per segment")


def extract_functionals(samples: np.ndarray | None, config: AudioConfig = AudioConfig(), rate: int = SAMPLE_RATE,
                        item_id: str | None = None) -> np.ndarray | None:
    """The segment's functionals (D,), or None when there is no audio or openSMILE gives no finite row
    (the writer then marks the set absent for this segment)."""
    return _functionals_vector(extract_audio(samples, 0.0, AudioConfig(config.feature_set, "functionals"), rate, item_id))


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

    def load(self) -> None:
        """Run openSMILE once on a second of silence: its first run imports the package and its C library."""
        run_opensmile(np.zeros(SAMPLE_RATE, np.float32), self.config.feature_set)

    def utterance(self, media: SegmentMedia, frames: FrameFeatures) -> np.ndarray | None:
        return self.extract_with_utterance(media)[1]

    def extract_with_utterance(self, media: SegmentMedia) -> tuple[FrameFeatures, np.ndarray | None]:
        """LLDs and functionals from one openSMILE run (computing them apart ran the whole config twice)."""
        if self.config.level == "functionals":
            return self.extract(media), None
        levels = _smile_levels(media.audio, media.start, self.config.feature_set, SAMPLE_RATE, media.segment_id)
        if levels is None:
            return empty_frames(len(feature_names(self.config.feature_set, "lld"))), None
        return levels["lld"], _functionals_vector(levels["functionals"])


@register("audio", "egemaps", default=True)
class EgemapsExtractor(OpenSmileExtractor):
    """openSMILE eGeMAPSv02: 25 low-level descriptors every 10 ms and their 88 functionals."""

    defaults: ClassVar[dict[str, Any]] = {"feature_set": "egemaps"}


@register("audio", "compare")
class CompareExtractor(OpenSmileExtractor):
    """openSMILE ComParE_2016: 65 low-level descriptors every 10 ms and their 6,373 functionals."""

    defaults: ClassVar[dict[str, Any]] = {"feature_set": "compare"}
