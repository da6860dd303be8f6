"""Every extractor by the name the command line uses (`--face dlib`): the one list of them.

Built-in extractors are imported on first use, so asking for "openface" never loads dlib or torch, and
`names()` imports nothing. `get(name, **settings)` returns one instance per process and settings (models load
once per process anyway); `describe()` lists each with its dimensions and whether it can run here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from dataclasses import dataclass
from typing import Any

from ..errors import PipelineError
from .base import KINDS, Extractor, Kind

# name -> (kind, "module:Class"); the order is the order `names()` and `mmolre extractors` list them in
_BUILTIN: dict[str, tuple[Kind, str]] = {
    "egemaps": ("audio", "pipelines.extract.audio:EgemapsExtractor"),
    "compare": ("audio", "pipelines.extract.audio:CompareExtractor"),
    "mediapipe": ("face", "pipelines.extract.face.mediapipe_backend:MediaPipeBackend"),
    "dlib": ("face", "pipelines.extract.face.dlib_backend:DlibBackend"),
    "pyfeat": ("face", "pipelines.extract.face.pyfeat_backend:PyFeatBackend"),
    "openface": ("face", "pipelines.extract.face.openface_csv:OpenFaceCsvBackend"),
    "minilm": ("text", "pipelines.extract.text:TransformersTextEncoder"),
    "pocketsphinx": ("words", "pipelines.extract.words.align:PocketsphinxAligner"),
    "whisper": ("words", "pipelines.extract.words.asr:WhisperAsr"),
}
_REGISTERED: dict[str, type[Extractor[Any, Any]]] = {}


@dataclass(frozen=True)
class ExtractorInfo:
    """One line of `mmolre extractors`: `dims` and `dim_names` are those of the default configuration
    (None / [] for words extractors, which make no feature set)."""

    name: str
    kind: str
    dims: int | None
    dim_names: list[str]
    version: str | None
    available: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def register(cls: type[Extractor[Any, Any]]) -> type[Extractor[Any, Any]]:
    """Class decorator: make an extractor available to `get` under its `name` (plug-ins; built-ins are listed above)."""
    if cls.kind not in KINDS:
        raise ValueError(f"extractor {cls.name!r}: kind {cls.kind!r} is not one of {KINDS}")
    _REGISTERED[cls.name] = cls
    return cls


def names(kind: Kind | None = None) -> list[str]:
    """Registered names (of one kind), built-ins first in their listed order; imports nothing."""
    found = [n for n, (k, _) in _BUILTIN.items() if kind is None or k == kind]
    return found + sorted(n for n, c in _REGISTERED.items() if n not in _BUILTIN and (kind is None or c.kind == kind))


def extractor_class(name: str, kind: Kind | None = None) -> type[Extractor[Any, Any]]:
    """The class registered as `name` (importing a built-in's module on first use); PipelineError naming the
    choices for an unknown name."""
    if name not in _REGISTERED and name in _BUILTIN:
        module, attr = _BUILTIN[name][1].split(":")
        _REGISTERED[name] = getattr(importlib.import_module(module), attr)
    cls = _REGISTERED.get(name)
    if cls is None or (kind is not None and cls.kind != kind):
        what = {"face": "face backend", None: "extractor"}.get(kind, f"{kind} extractor")
        raise PipelineError(f"unknown {what} {name!r}; choose one of {', '.join(names(kind))}", stage=kind or "extract")
    return cls


def make_config(cls: type[Extractor[Any, Any]], /, **settings: Any) -> Any:
    """`cls`'s config dataclass from keyword settings (lists become tuples), naming any unknown ones."""
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise PipelineError(f"{cls.kind} extractor {cls.name!r}: unknown settings {unknown}; known: {sorted(fields)}",
                            stage=cls.kind)
    values = {**getattr(cls, "defaults", {}), **settings}
    return cls.config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@functools.lru_cache(maxsize=64)
def _cached(name: str, config: Any) -> Extractor[Any, Any]:
    return extractor_class(name)(config)


def get(name: str, kind: Kind | None = None, /, **settings: Any) -> Extractor[Any, Any]:
    """The extractor called `name` with the given settings, one instance per process and settings.
    `kind` given: the name must be an extractor of that kind. Unknown names or settings raise PipelineError."""
    cls = extractor_class(name, kind)
    return _cached(name, make_config(cls, **settings))


def info(name: str) -> ExtractorInfo:
    """What `describe` says of one extractor; an extractor that cannot even be built says why."""
    kind = _BUILTIN[name][0] if name in _BUILTIN else extractor_class(name).kind
    try:
        ex = get(name)
        available, reason = ex.availability()
        fs = ex.feature_set()
        version = fs.extractor_version if fs is not None else ex.version()
    except (PipelineError, ImportError, OSError, ValueError) as e:
        return ExtractorInfo(name, kind, None, [], None, False, str(e).splitlines()[0])
    dims = list(fs.dims) if fs is not None else []
    return ExtractorInfo(name, kind, len(dims) if fs is not None else None, dims, version or None, available, reason)


def describe(kind: Kind | None = None) -> list[ExtractorInfo]:
    """Every registered extractor (of one kind) with its dimensions, version and whether it can run here."""
    return [info(n) for n in names(kind)]
