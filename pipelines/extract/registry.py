"""Every extractor by the name the command line uses (`--face dlib`, `--asr whisper`), registered where it is
defined: `@register("face", "dlib")` on its class.

The registry finds the built-in extractors without importing them: it reads the sources of this package (the
`@register(kind, name)` decorators, and each class's docstring for help text) once per process, and imports an
extractor's module only when that extractor is asked for, so asking for "openface" never loads dlib or torch
and `names()` imports nothing. An extractor defined outside the package registers when its module is imported
(a plug-in). `get(name, **settings)` returns one instance per process and settings (models load once per process
anyway); `describe()` lists each with its dimensions and whether it can run here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import PipelineError
from .base import KINDS, Extractor, Kind

_C = TypeVar("_C", bound=type)
_REGISTERED: dict[str, type[Extractor[Any, Any]]] = {}
_PLUGINS: dict[str, Entry] = {}  # registered from modules outside this package, in the order they came


@dataclass(frozen=True)
class Entry:
    """What the registry knows of an extractor before importing it: `summary` is its class docstring's first
    sentence (help text); `default` is the role it is the build's default for ("" the kind's default,
    "multilingual" the recogniser of other languages; None: no default)."""

    name: str
    kind: Kind
    module: str
    summary: str = ""
    default: str | None = None


@dataclass(frozen=True)
class ExtractorInfo:
    """One line of `mmolre extractors`: `dims` and `dim_names` are those of the default configuration
    (None / [] for aligners and recognisers, which make no feature set)."""

    name: str
    kind: str
    dims: int | None
    dim_names: list[str]
    version: str | None
    available: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def register(kind: Kind, name: str, *, default: bool | str = False) -> Callable[[_C], _C]:
    """Class decorator: the extractor `name` of `kind`; `default`: True for the one a build uses unless told
    otherwise, a role's name ("multilingual") for that role's default. Sets the class's `name` and `kind`.
    Literal arguments only: the registry reads them from the source."""
    if kind not in KINDS:
        raise ValueError(f"extractor {name!r}: kind {kind!r} is not one of {KINDS}")

    def decorate(cls: _C) -> _C:
        taken = _index().get(name) or _PLUGINS.get(name)
        if taken is not None and taken.module != cls.__module__:  # else the last import would win, silently
            raise ValueError(f"extractor name {name!r} is registered twice: {taken.module} and {cls.__module__}")
        cls.name, cls.kind = name, kind  # type: ignore[attr-defined]
        _REGISTERED[name] = cls  # type: ignore[assignment]
        if taken is None:
            role = "" if default is True else (default or None)
            _PLUGINS[name] = Entry(name, kind, cls.__module__, _summary(cls.__doc__), role)
        return cls

    return decorate


def _summary(doc: str | None) -> str:
    """A docstring's first sentence on one line."""
    text = " ".join((doc or "").split())
    head, dot, _ = text.partition(". ")
    return head.rstrip(".") if dot or head else ""


# `@register("kind", "name"[, default=True])` on the line before a class, and that class's docstring
_DECORATED = re.compile(r'^@(?:registry\.)?register\((.*?)\)\s*\nclass \w+[^\n]*:\n(?:\s*"""(.*?)""")?', re.M | re.S)
_ARGS = re.compile(r'^\s*"([a-z]+)",\s*"([\w.-]+)"\s*(?:,\s*default=(True|"\w+")\s*)?$')


def _entries(path: Path, module: str) -> list[Entry]:
    """The `@register(kind, name)` classes of one source file, in the order they are defined (read with a
    pattern, not imported: a few ms for the whole package)."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in _DECORATED.finditer(text) if "@register(" in text or "@registry.register(" in text else ():
        args = _ARGS.match(m.group(1))
        if args is None or args.group(1) not in KINDS:
            raise ValueError(f"{path}: @register({m.group(1)}) needs a literal kind of {KINDS} and a literal name")
        role = None if args.group(3) is None else args.group(3).strip('"').replace("True", "")
        out.append(Entry(args.group(2), args.group(1), module, _summary(m.group(2)), role))  # type: ignore[arg-type]
    return out


@functools.cache
def _index() -> dict[str, Entry]:
    """The package's extractors by name: each kind in KINDS order, its default first, then in source order."""
    root = Path(__file__).resolve().parent
    found: list[Entry] = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join((__package__ or "pipelines.extract", *path.relative_to(root).with_suffix("").parts))
        found += _entries(path, module)
    seen: dict[str, Entry] = {}
    for e in found:
        if e.name in seen:
            raise ValueError(f"extractor name {e.name!r} is registered twice: {seen[e.name].module} and {e.module}")
        seen[e.name] = e
    found.sort(key=lambda e: (KINDS.index(e.kind), e.default != ""))
    return {e.name: e for e in found}


def entries(kind: Kind | None = None) -> list[Entry]:
    """Every extractor (of one kind) as the registry knows it without importing it: built-ins, then plug-ins."""
    both = [*_index().values(), *(e for n, e in _PLUGINS.items() if n not in _index())]
    return [e for e in both if kind is None or e.kind == kind]


def names(kind: Kind | None = None) -> list[str]:
    """Registered names (of one kind), the kind's default first; imports nothing."""
    return [e.name for e in entries(kind)]


def default(kind: Kind, role: str = "") -> str:
    """The name a build uses for `kind` (in `role`: "multilingual") when none is given."""
    marked = [e.name for e in entries(kind) if e.default == role]
    if len(marked) != 1:
        raise ValueError(f"{len(marked)} default {kind} extractors{' for ' + role if role else ''} ({marked}): "
                         f"mark exactly one with default={'True' if not role else repr(role)}")
    return marked[0]


def help_text(kind: Kind) -> str:
    """`name: summary; ...` of one kind, for command-line help (the defaults marked)."""
    mark = {None: "", "": " (default)"}
    return "; ".join(f"{e.name}{mark.get(e.default, f' (default, {e.default})')}: {e.summary}" for e in entries(kind))


def extractor_class(name: str, kind: Kind | None = None) -> type[Extractor[Any, Any]]:
    """The class registered as `name` (importing its module on first use); PipelineError naming the choices
    for an unknown name."""
    entry = _index().get(name) or _PLUGINS.get(name)
    if name not in _REGISTERED and entry is not None:
        importlib.import_module(entry.module)
        if name not in _REGISTERED:
            raise PipelineError(f"{entry.module} does not register the extractor {name!r}", stage="extract")
    cls = _REGISTERED.get(name)
    if cls is None or (kind is not None and cls.kind != kind):
        what = {"face": "face backend", "asr": "speech recogniser", None: "extractor"}.get(kind, f"{kind} extractor")
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
    entry = _index().get(name) or _PLUGINS.get(name)
    kind = entry.kind if entry is not None else extractor_class(name).kind
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
