"""Inputs as one list of `SegmentSpec`s: the row checks every reader shares, table reading (local or at a URL),
and the project's own formats; datasets' own layouts are read by their recipe files (pipelines/recipes/), and
`recipes.videos.discover_inputs` picks the reader by the input's shape.

The project's own formats: a manifest (CSV or JSONL): video_path, segment_id, start, end, transcript, sentiment
(a number in [-3, 3], or MELD's negative/neutral/positive, taken as sentiment_class), emotions (a JSON object, or
the six columns happy..fear: emotions a row does not list are 0; a row with none is unknown), emotion (one class
of the dataset's own set: MELD, CREMA-D, RAVDESS, IEMOCAP or any declared set), sentiment_class, split, language
(a BCP-47 code: `en`, `es`, `pt-BR`, or `und`: the recogniser detects it; default `en`: others go to the multilingual
recogniser, not the English aligner and text encoder), speaker (optional, docs/face.md); and one media file.

Labels follow feature_schemas/labels.py on every route. A build's emotion class set is declared or found from its
rows by `resolve_emotion_classes`; rows naming a class outside it fail. A problem with one row (a bad id, a label
out of range, a missing file) is a `Failure` and the other rows still build; a problem with the input as a whole
(missing file, unknown format, missing columns) raises `PipelineError` naming the file. Segment ids are keys that
users join on, never rewritten: one that cannot be a file name (empty, with `/`, `\\`, `..` or control
characters, or surrounding white space) is a failed row.

Inputs at a URL (`s3://bucket/x/manifest.csv`, any fsspec filesystem): a manifest, a label file, one media file, or
a manifest's `video_path`s (relative ones resolve against the manifest's URL); such a path stays a string (a Path
folds `s3://` into `s3:/`), is checked with one HEAD while planning and fetched by the worker that decodes it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from feature_schemas import (
    EMOTIONS,
    SENTIMENT_CLASSES,
    SPLITS,
    ClassSet,
    class_name,
    emotion_class_set,
)
from feature_schemas.storage import (
    display,
    input_name,
    input_problem,
    input_suffix,
    is_url,
    read_input_bytes,
    refuse_url_credentials,
    resolve_input,
    stat_input,
)

from .errors import PipelineError
from .records import Failure
from .rows import BadRow, csv_rows, json_row

Where = Path | str  # a local path, or an input URL kept as a string

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac")
SPLIT_ALIASES = {"dev": "valid", "val": "valid", "validation": "valid"}
LABEL_KEYS = ("sentiment", *EMOTIONS, "sentiment_class", "emotion_class")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (U+0080-U+009F: CSI and friends in some terminals)
SHOWN_ID = 80  # characters of an id a message shows


@dataclass(frozen=True)
class SegmentSpec:
    """One utterance to build: where its media is (None for text-only), its transcript and labels.

    `start`/`end` are seconds inside the video; None means the whole file (or no media at all).
    `labels` holds only columns of the segments table (sentiment, happy..fear, sentiment_class,
    emotion_class); `extra` keeps other per-row values (MMSA's label_T/A/V) for callers that want them."""

    segment_id: str
    video_id: str
    video_path: Path | str | None  # a URL stays a string
    start: float | None
    end: float | None
    transcript: str | None
    labels: dict[str, Any]
    split: str
    source: str
    source_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    language: str = "en"  # what is spoken; only English reaches the English aligner, Whisper tiny.en and MiniLM
    speaker: str | None = None  # who speaks (a manifest's `speaker`): the face set's relative cues use their baseline

    @property
    def text_only(self) -> bool:
        return self.video_path is None

    def segment_row(self, start: float | None = None, end: float | None = None, transcript: str | None = None) -> dict[str, Any]:
        """The segments-table row; media-derived times and a recognised transcript override the given ones."""
        row: dict[str, Any] = {
            "segment_id": self.segment_id,
            "video_id": self.video_id,
            "split": self.split,
            "start": self.start if start is None else start,
            "end": self.end if end is None else end,
            "transcript": self.transcript if transcript is None else transcript,
            "source": self.source,
            "source_path": self.source_path,
            **{key: self.labels.get(key) for key in LABEL_KEYS},
        }
        return row if self.speaker is None else {**row, "speaker": self.speaker}  # schema 2.2's optional column


@dataclass
class ParsedInputs:
    """What a parser found: the usable segments and one failure per rejected row."""

    specs: list[SegmentSpec] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    source: str = ""
    path: str | None = None

    def __len__(self) -> int:
        return len(self.specs)

    def __add__(self, other: ParsedInputs) -> ParsedInputs:
        merged = ParsedInputs(self.specs + other.specs, self.failures + other.failures, "+".join(
            s for s in (self.source, other.source) if s), self.path or other.path)
        return unique_specs(merged)

    def splits(self) -> dict[str, int]:
        return dict(Counter(s.split for s in self.specs))


class RowError(ValueError):
    """A problem confined to one input row; becomes a `Failure`."""


# --- field checks ---------------------------------------------------------------------------------------

def check_id(value: Any, what: str = "segment id") -> str:
    """Return the id as a string, or raise RowError when it cannot serve as a key and file name."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise RowError(f"{what} is missing")
    text = str(value)
    if not text:
        raise RowError(f"{what} is empty")
    shown = shown_id(text)
    if text != text.strip():
        raise RowError(f"{what} {shown} has leading or trailing white space")
    if "/" in text or "\\" in text:
        raise RowError(f"{what} {shown} contains a path separator ('/' or '\\')")
    if ".." in text or text == ".":
        raise RowError(f"{what} {shown} contains '..' or is '.'")
    if _CONTROL.search(text):
        raise RowError(f"{what} {shown} contains control characters")
    return text


def shown_id(text: str) -> str:
    """An id as a message shows it: repr-quoted (escapes control characters), a long one cut with its length."""
    if len(text) <= SHOWN_ID:
        return repr(text)
    return f"{text[:SHOWN_ID - 20]!r}...{text[-10:]!r} ({len(text):,} characters)"


_LANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})*")


def check_language(value: Any) -> str:
    """A language code as a lower-case BCP-47 tag ("en", "es", "pt-br"); missing means English."""
    if is_missing(value):
        return "en"
    text = str(value).strip().lower().replace("_", "-")
    if not _LANGUAGE.fullmatch(text):
        raise RowError(f"language {value!r} is not a language code such as en, es or pt-BR")
    return text


def check_split(value: Any) -> str:
    text = "" if is_missing(value) else str(value).strip().lower()
    text = SPLIT_ALIASES.get(text, text)
    if text not in SPLITS:
        raise RowError(f"split {value!r} is not one of {', '.join(SPLITS)} (or dev/val/validation)")
    return text


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def number_in(value: Any, what: str, low: float | None = None, high: float | None = None) -> float | None:
    if is_missing(value):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RowError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise RowError(f"{what} {value!r} is not finite")
    if (low is not None and x < low) or (high is not None and x > high):
        raise RowError(f"{what} {x} is outside [{low}, {high}]")
    return x


def _category(value: Any, what: str, allowed: tuple[str, ...]) -> str | None:
    if is_missing(value):
        return None
    text = str(value).strip().lower()
    if text not in allowed:
        raise RowError(f"{what} {value!r} is not one of {', '.join(allowed)}")
    return text


def text_value(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _emotions(row: dict[str, Any]) -> dict[str, float | None]:
    """MOSEI's six presence emotions of one row: 0 for each one a row that gives emotions does not list;
    null for all six only when the row gives none (no `emotions` object, every per-emotion column empty)."""
    emotions = row.get("emotions")
    if not is_missing(emotions):
        if isinstance(emotions, str):
            try:
                emotions = json.loads(emotions)
            except (json.JSONDecodeError, RecursionError) as e:
                raise RowError(f"emotions {shown_id(emotions)} is not a JSON object: {e}") from None
        if not isinstance(emotions, dict):
            raise RowError(f"emotions must be a JSON object of {', '.join(EMOTIONS)}, not {shown_id(repr(emotions))}")
        unknown = set(emotions) - set(EMOTIONS)
        if unknown:
            raise RowError(f"emotions has unknown keys {sorted(unknown)}; known: {', '.join(EMOTIONS)} "
                           "(a single class such as CREMA-D's or RAVDESS's goes in the emotion column)")
        given = emotions
    else:
        given = {e: row.get(e) for e in EMOTIONS if not is_missing(row.get(e))}
        if not given:
            return {e: None for e in EMOTIONS}
    out: dict[str, float | None] = {}
    for e in EMOTIONS:
        x = number_in(given.get(e), e, 0.0, 3.0)
        out[e] = 0.0 if x is None else x
    return out


def _class(value: Any, what: str) -> str | None:
    if is_missing(value):
        return None
    try:
        return class_name(value)
    except ValueError as e:
        raise RowError(f"{what} {e}") from None


def check_labels(row: dict[str, Any]) -> dict[str, Any]:
    """Labels of one row in the segments table's names and ranges: sentiment in [-3, 3] (MELD's words in the
    sentiment column become sentiment_class), emotions in [0, 3] with absent ones 0, emotion_class a
    well-formed lower-case name (whether it is in the build's set is `resolve_emotion_classes`' question)."""
    sentiment, sentiment_class = row.get("sentiment"), row.get("sentiment_class")
    if isinstance(sentiment, str) and sentiment.strip().lower() in SENTIMENT_CLASSES:
        word = sentiment.strip().lower()
        if not is_missing(sentiment_class) and str(sentiment_class).strip().lower() != word:
            raise RowError(f"sentiment {sentiment!r} and sentiment_class {sentiment_class!r} disagree")
        sentiment, sentiment_class = None, word
    labels: dict[str, Any] = {"sentiment": number_in(sentiment, "sentiment", -3.0, 3.0)}
    labels.update(_emotions(row))
    labels["sentiment_class"] = _category(sentiment_class, "sentiment_class", SENTIMENT_CLASSES)
    labels["emotion_class"] = _class(row.get("emotion") if is_missing(row.get("emotion_class")) else row.get("emotion_class"),
                                     "emotion")
    return labels


def resolve_emotion_classes(parsed: ParsedInputs, declared: str | Sequence[str] | None = None) -> tuple[ParsedInputs, ClassSet]:
    """The build's emotion class set (`declared`: a known set's name or class names; None: found from the
    rows, see `feature_schemas.emotion_class_set`) and the inputs with each emotion under its canonical name
    (CREMA-D's `ang` -> `anger`); a row naming a class outside the set becomes a failure."""
    found = {s.labels["emotion_class"] for s in parsed.specs if s.labels.get("emotion_class") is not None}
    try:
        classes = emotion_class_set(found, declared)
    except ValueError as e:
        raise PipelineError(f"{parsed.path or 'inputs'}: {e}", stage="read", source_path=parsed.path) from None
    specs: list[SegmentSpec] = []
    failures = list(parsed.failures)
    allowed = ", ".join(classes.classes) or "none"
    for s in parsed.specs:
        value = s.labels.get("emotion_class")
        name = None if value is None else classes.canonical(value)
        if value is not None and name is None:
            failures.append(Failure(s.segment_id, "read", f"{s.source_path}: segment {s.segment_id!r}: emotion {value!r} "
                                    f"is not one of the build's emotion classes ({allowed}); declare the set with "
                                    "--emotion-classes", s.source_path))
            continue
        specs.append(s if name == value else replace(s, labels={**s.labels, "emotion_class": name}))
    return ParsedInputs(specs, failures, parsed.source, parsed.path), classes


# --- paths ----------------------------------------------------------------------------------------------

def where(path: str | Path) -> Where:
    """A URL as a string (Path would fold `s3://` into `s3:/`), anything else as a Path. A URL with
    credentials in it is refused without echoing them."""
    if not is_url(path):
        return Path(path)
    try:
        refuse_url_credentials(str(path))
    except ValueError as e:
        raise PipelineError(str(e), stage="read", source_path=display(path)) from None
    return str(path)


def stem_of(path: Where) -> str:
    name = input_name(path)
    return Path(name).stem


def suffix_of(path: Where) -> str:
    return input_suffix(path) if isinstance(path, str) else path.suffix.lower()


def media_problem(path: Where, what: str = "a media file") -> str | None:
    if isinstance(path, str):  # one HEAD: present, a file, not empty
        try:
            size = stat_input(path).size
        except Exception as e:  # noqa: BLE001 - botocore/aiohttp errors are not OSErrors
            return input_problem(path, e).removeprefix(f"{path}: ")
        return "is empty (0 bytes)" if size == 0 else None
    from .media import path_problem  # PyAV is imported only when media paths are checked

    return path_problem(path, what)


# --- table reading --------------------------------------------------------------------------------------

def require_input(path: Where, what: str) -> Where:
    path = where(path)
    if isinstance(path, str):
        problem = media_problem(path)
        if problem is not None:
            raise PipelineError(f"{what} {path} {problem}", stage="read", source_path=path)
        return path
    if not path.exists():
        raise PipelineError(f"{what} {path} does not exist", stage="read", source_path=str(path))
    if path.is_file() and path.stat().st_size == 0:
        raise PipelineError(f"{what} {path} is empty (0 bytes)", stage="read", source_path=str(path))
    return path


def _read_text(path: Where, encoding: str) -> str:
    if isinstance(path, str):
        try:
            return read_input_bytes(path).decode(encoding)
        except UnicodeDecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - botocore/aiohttp errors are not OSErrors
            raise PipelineError(input_problem(path, e), stage="read", source_path=path) from None
    return path.read_text(encoding=encoding)


def check_row(row: dict[str, Any]) -> None:
    """A row `read_rows` could not read fails alone (RowError), naming why."""
    if isinstance(row, BadRow):
        raise RowError(row.problem)


def read_rows(path: Where) -> list[dict[str, Any]]:
    """Rows of a CSV (header line) or JSONL file (a local path or a URL) as dicts; an unreadable file raises
    PipelineError, an unreadable row is a `BadRow` its reader fails alone."""
    path = require_input(path, "table")
    try:
        if suffix_of(path) in (".jsonl", ".ndjson"):
            return [json_row(path, n, line) for n, line in enumerate(_read_text(path, "utf-8").splitlines(), start=1)
                    if line.strip()]
        delimiter = "\t" if suffix_of(path) == ".tsv" else ","
        if isinstance(path, str):
            return csv_rows(io.StringIO(_read_text(path, "utf-8-sig"), newline=""), delimiter)
        with path.open(newline="", encoding="utf-8-sig") as f:
            return csv_rows(f, delimiter)
    except UnicodeDecodeError as e:
        raise PipelineError(f"{path} is not UTF-8 text: {e}", stage="read", source_path=str(path)) from None
    except csv.Error as e:
        raise PipelineError(f"{path} is not a readable CSV: {e}", stage="read", source_path=str(path)) from None


def columns_of(rows: list[dict[str, Any]]) -> set[str]:
    return {k for r in rows[:50] for k in r if k is not None}


def need_columns(path: Where, rows: list[dict[str, Any]], needed: tuple[str, ...]) -> None:
    cols = columns_of(rows)
    missing = [c for c in needed if c not in cols]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}", stage="read", source_path=str(path))


def row_failure(path: Where, row_no: int, item: str | None, error: Exception, source_path: str | None = None) -> Failure:
    return Failure(item_id=item or f"{input_name(path)}:row{row_no}", stage="read",
                   reason=f"{path}: row {row_no}: {error}", source_path=source_path or str(path))


def unique_specs(parsed: ParsedInputs) -> ParsedInputs:
    """Every copy of a repeated segment id fails: which one was meant cannot be known."""
    counts = Counter(s.segment_id for s in parsed.specs)
    dup = {k for k, n in counts.items() if n > 1}
    if not dup:
        return parsed
    keep = [s for s in parsed.specs if s.segment_id not in dup]
    failures = list(parsed.failures)
    for s in parsed.specs:
        if s.segment_id in dup:
            failures.append(Failure(s.segment_id, "read", f"{s.source_path}: segment id {s.segment_id!r} appears "
                                    f"{counts[s.segment_id]} times", s.source_path))
    return ParsedInputs(keep, failures, parsed.source, parsed.path)


# --- the project's own formats: a manifest, one media file ------------------------------------------------

def _video_path(manifest: Where, given: str) -> Where:
    """A manifest's `video_path`: a URL as given; a local path with `~` expanded, relative ones against the
    manifest's folder (or its URL)."""
    if is_url(given) and display(given) != given:
        raise RowError(f"video path {display(given)} has credentials in its URL; refused (give them in the "
                       "environment instead, e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
    if is_url(given) or (isinstance(manifest, str) and not given.startswith(("/", "~"))):
        return resolve_input(manifest, given) if isinstance(manifest, str) else given
    video = Path(given)
    try:
        video = video.expanduser()
    except RuntimeError:  # "~someone" with no such user: no home to expand to
        raise RowError(f"video path {str(video)!r} names a home directory that does not exist") from None
    if not video.is_absolute() and isinstance(manifest, Path):
        video = manifest.parent / video
    return video


def read_manifest(path: str | Path, default_split: str = "test", check_files: bool = True) -> ParsedInputs:
    """A CSV or JSONL manifest (module docstring lists the columns). Relative `video_path`s resolve against
    the manifest's folder. Without `segment_id`, ids are `<video stem>_<n>` (n counts that video's rows from
    1) or `<manifest stem>_<row>` for text-only rows; `video_id` defaults to the video's stem. The manifest and
    its `video_path`s may be URLs; relative ones in a manifest at a URL resolve against its URL."""
    path = require_input(path, "manifest")
    rows = read_rows(path)
    cols = columns_of(rows)
    if not ({"video_path", "transcript"} & cols):
        raise PipelineError(f"{path}: a manifest needs a video_path or a transcript column (found: "
                            f"{', '.join(sorted(cols)) or 'none'})", stage="read", source_path=str(path))
    default = check_split(default_split)
    per_video: Counter[str] = Counter()
    out = ParsedInputs(source="manifest", path=str(path))
    row_no = 1 if suffix_of(path) in (".jsonl", ".ndjson") else 2
    for n, r in enumerate(rows, start=row_no):
        sid = None if is_missing(r.get("segment_id")) else str(r.get("segment_id"))
        src = None
        try:
            check_row(r)
            video: Where | None = None
            if not is_missing(r.get("video_path")):
                video = _video_path(path, str(r["video_path"]).strip())
                src = str(video)
                if check_files and (problem := media_problem(video)):
                    raise RowError(f"video {video} {problem}")
            transcript = None if is_missing(r.get("transcript")) else text_value(r.get("transcript"))
            if video is None and transcript is None:
                raise RowError("needs a video_path or a transcript")
            if sid is None:
                if video is not None:
                    per_video[str(video)] += 1
                    sid = f"{stem_of(video)}_{per_video[str(video)]}"
                else:
                    sid = f"{stem_of(path)}_{n}"
            sid = check_id(sid)
            vid = r.get("video_id")
            vid = check_id(vid, "video_id") if not is_missing(vid) else (stem_of(video) if video is not None else sid)
            start = number_in(r.get("start"), "start", 0.0)
            end = number_in(r.get("end"), "end", 0.0)
            if start is not None and end is not None and end <= start:
                raise RowError(f"end {end} is not after start {start}")
            if video is None and (start is not None or end is not None):
                start = end = None  # times without media mean nothing to cut
            split = default if is_missing(r.get("split")) else check_split(r.get("split"))
            out.specs.append(SegmentSpec(sid, vid, video, start, end, transcript, check_labels(r), split,
                                         "manifest", src or str(path), language=check_language(r.get("language")),
                                         speaker=None if is_missing(spk := r.get("speaker")) else check_id(spk, "speaker")))
        except RowError as e:
            out.failures.append(row_failure(path, n, sid, e, src))
    return unique_specs(out)


def read_video(path: str | Path, segment_id: str | None = None, split: str = "test",
               transcript: str | None = None, labels: dict[str, Any] | None = None) -> ParsedInputs:
    """One media file (a path or a URL) as one segment spanning the whole file; the id defaults to the file's stem."""
    path = where(path)
    if problem := media_problem(path):
        raise PipelineError(f"video {path} {problem}", stage="read", source_path=str(path))
    try:
        sid = check_id(segment_id or stem_of(path))
        spec = SegmentSpec(sid, sid, path, None, None, transcript, check_labels(labels or {}),
                           check_split(split), "video", str(path))
    except RowError as e:
        raise PipelineError(f"{path}: {e}", stage="read", item_id=segment_id, source_path=str(path)) from None
    return ParsedInputs([spec], [], "video", str(path))
