"""What a media build runs: its settings (`VideoConfig`, recorded in the manifest) and its extractors, each
chosen by name through the registry (`--audio`, `--face`, `--text`, `--aligner`, `--asr`)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from feature_schemas import FeatureSet

from ..errors import PipelineError
from ..extract import registry
from ..extract.base import Extractor, FrameExtractor, Kind
from ..extract.text import TextEncoder
from ..extract.words.base import Aligner, Recogniser
from ..extract.words.normalise import is_english

_E = TypeVar("_E")
# fields added after stores were built: recorded only when not at their defaults (see to_dict)
_LATER = ("text", "aligner", "asr", "aligner_multilingual", "asr_multilingual", "audio_model", "audio_layer",
          "text_languages")
# the registry's default per kind, read from the extractors' sources (no extractor module is imported)
DEFAULTS: dict[str, str] = {kind: registry.default(kind) for kind in ("audio", "face", "text", "aligner", "asr")}
DEFAULTS |= {f"{kind}_multilingual": registry.default(kind, "multilingual") for kind in ("aligner", "asr")}
DEFAULTS |= {"audio_model": None, "audio_layer": -1, "text_languages": "en"}  # type: ignore[dict-item]


@dataclass(frozen=True)
class VideoConfig:
    """Everything that shapes the features; it travels into the manifest, so a changed setting rebuilds.

    audio_set/audio_level: the audio extractor's name (`--audio`) and lld|functionals; audio_model/audio_layer:
    the model folder and hidden layer of an audio encoder that reads one (`transformers-audio`). face: face backend name
    or None (no face feature set); face_options: that backend's settings. text: the text encoder's name
    (`--text`), text_model: its local model folder (None: the packaged one), text_name: its set's name in the
    store, text_languages: the languages it reads ("en"; "de,fr"; "*" any: a multilingual model such as XLM-R;
    other segments get zero vectors with coverage 0). aligner: the aligner of given English transcripts (`--aligner`); align: forced alignment on (off:
    words spread over the segment). asr: the recogniser (`--asr`) of English segments without a transcript
    (`transcribe`) and of the aligner's fallback (`asr_fallback`); asr_model: its model folder (None: the
    packaged one). aligner_multilingual, asr_multilingual: the same for every other language, and for segments
    whose language is `und` (undetermined: the recogniser detects it).
    threads: per worker process for torch and the recogniser (a Dask worker per core wants 1). utterance: also
    write utterance-level sets (schema 2): the audio functionals of each segment, the text encoder's pooled
    sentence vector and a face summary."""

    fps: float = 5.0
    audio_set: str = DEFAULTS["audio"]
    audio_level: str = "lld"
    face: str | None = DEFAULTS["face"]
    face_options: dict[str, Any] = field(default_factory=dict)
    text_model: str | None = None
    text_name: str = "text_minilm"
    text_batch_size: int = 32
    align: bool = True
    asr_fallback: bool = True
    transcribe: bool = True
    asr_model: str | None = None
    max_forced_seconds: float = 90.0
    text_segments_per_unit: int = 512
    threads: int | None = 1
    utterance: bool = True
    text: str = DEFAULTS["text"]
    aligner: str = DEFAULTS["aligner"]
    asr: str = DEFAULTS["asr"]
    aligner_multilingual: str = DEFAULTS["aligner_multilingual"]
    asr_multilingual: str = DEFAULTS["asr_multilingual"]
    audio_model: str | None = None
    audio_layer: int = -1
    text_languages: str = "en"

    def __post_init__(self) -> None:
        for kind, name in (("audio", self.audio_set), ("face", self.face), ("text", self.text),
                           ("aligner", self.aligner), ("asr", self.asr), ("aligner", self.aligner_multilingual),
                           ("asr", self.asr_multilingual)):
            choices = registry.names(kind)  # type: ignore[arg-type]
            if name is not None and name not in choices:
                raise ValueError(f"{kind} extractor {name!r}: choose one of {', '.join(choices)}"
                                 + (" or None" if kind == "face" else ""))
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, not {self.fps}")
        if self.audio_level not in ("lld", "functionals"):
            raise ValueError(f"audio level {self.audio_level!r}: choose one of lld, functionals")
        if self.audio_model is not None and not _reads_model(self.audio_set):
            reads = [n for n in registry.names("audio") if _reads_model(n)]
            raise ValueError(f"audio extractor {self.audio_set!r} reads no model folder (audio_model); one that "
                             f"does: {', '.join(reads)}")

    def text_reads(self, language: str) -> bool:
        """Whether the text encoder reads `language` (see `text_languages`)."""
        wanted = {x.strip().lower() for x in self.text_languages.split(",")}
        return "*" in wanted or language.split("-")[0] in wanted or ("en" in wanted and is_english(language))

    def text_languages_read(self) -> str:
        """`text_languages` in words, for messages."""
        return {"en": "English", "*": "any language"}.get(self.text_languages, self.text_languages)

    def to_dict(self) -> dict[str, Any]:
        """The settings as the manifest records them; the extractor names that came later (text, aligner, asr)
        only when they are not the registry's defaults, so stores built before keep their shard keys."""
        out = asdict(self)
        for key in _LATER:
            if out[key] == DEFAULTS[key]:  # type: ignore[index]
                del out[key]
        return out

    # --- the build's extractors, from the registry (one instance per process and settings) ---

    def text_encoder(self) -> TextEncoder:
        return _build(self.text, "text", TextEncoder, model_path=self.text_model, name=self.text_name,
                      batch_size=self.text_batch_size, threads=self.threads)

    def aligner_extractor(self, multilingual: bool = False) -> Aligner:
        return _build(self.aligner_multilingual if multilingual else self.aligner, "aligner", Aligner,
                      forced=self.align, asr_fallback=self.asr_fallback and self.align,
                      max_forced_seconds=self.max_forced_seconds)

    def recogniser(self, multilingual: bool = False) -> Recogniser:
        """The English recogniser, or the multilingual one (which ignores `asr_model`: that names the first's)."""
        if multilingual:
            return _build(self.asr_multilingual, "asr", Recogniser, threads=self.threads or 0)
        return _build(self.asr, "asr", Recogniser, model_path=self.asr_model, threads=self.threads or 0)

    def frame_extractors(self, audio: bool = True, video: bool = True) -> list[FrameExtractor]:
        """The frame extractors inputs with (audio, pictures) feed, in store order: audio, then face."""
        out: list[FrameExtractor] = []
        if audio:
            out.append(_build(self.audio_set, "audio", FrameExtractor, level=self.audio_level, model_path=self.audio_model,
                              layer=self.audio_layer, threads=self.threads))
        if audio and video and self.face is not None:
            out.append(_build(self.face, "face", FrameExtractor, **{"fps": self.fps, **self.face_options}))
        return out


def _reads_model(name: str) -> bool:
    """Whether the audio extractor `name` takes a model folder (a `model_path` setting)."""
    config_class = registry.extractor_class(name, "audio").config_class
    return "model_path" in {f.name for f in dataclasses.fields(config_class)}


def _build(extractor_name: str, kind: Kind, cls: type[_E], /, **settings: Any) -> _E:
    """The registry's extractor `extractor_name` with those of `settings` its configuration has (the build's settings are
    shared by every extractor of a kind: a recogniser without a model folder ignores `model_path`)."""
    own = registry.extractor_class(extractor_name, kind)
    fields = {f.name for f in dataclasses.fields(own.config_class)}
    extractor: Extractor[Any, Any] = registry.get(extractor_name, kind,
                                                  **{k: v for k, v in settings.items() if k in fields})
    if not isinstance(extractor, cls):
        raise PipelineError(f"{kind} extractor {extractor_name!r} is not a {cls.__name__}", stage=kind)
    return extractor


def feature_sets_for(config: VideoConfig, audio: bool = True, video: bool = True) -> list[FeatureSet]:
    """The build's feature sets in store order: text, audio (when some input has media), face (when a backend is
    chosen and some input can have pictures), then with `config.utterance` the utterance-level ones: sentence
    vector, audio functionals (with audio, LLDs), face summary (with a face set). Cheap: no model is loaded;
    an extractor that cannot run here raises PipelineError saying why."""
    text = config.text_encoder()
    frames = config.frame_extractors(audio, video)
    for ex in frames:
        ok, why = ex.availability()
        if not ok:
            raise PipelineError(f"{ex.kind} extractor {ex.name!r} cannot run here: {why}", stage=ex.kind)
    sets = [text.feature_set(), *(ex.feature_set() for ex in frames)]
    if config.utterance:
        sets.append(text.utterance_set())
        sets += [fs for ex in frames if (fs := ex.utterance_set()) is not None]
    return sets
