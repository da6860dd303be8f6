"""The store's dataset card: a README.md with the Hugging Face YAML header, so a store can be shared as is and
`datasets.load_dataset(STORE, "aligned")` finds its tables by split."""

from __future__ import annotations

import json
from typing import Any

from feature_schemas import LAYOUT, SPLITS, Manifest, contract, table_dir

from .leakage import leakage_lines


def _configs(manifest: Manifest) -> list[str]:
    tables = sorted({e.table for e in manifest.files.values() if e.table != "failures"})
    lines = ["configs:"]
    for table in ["segments", "aligned", "utterance"] + [t for t in tables if t.startswith("frames/")]:
        splits = [s for s in SPLITS if manifest.rows(table, s)]
        if not splits:
            continue
        lines.append(f"- config_name: {table.replace('/', '_')}")
        if table == "segments":
            lines.append("  default: true")
        lines.append("  data_files:")
        for s in splits:
            folder = table_dir("frames", s, table.split("/", 1)[1]) if table.startswith("frames/") else table_dir(table, s)
            lines += [f"  - split: {s}", f"    path: {folder}/*.parquet"]
    return lines


CARD_IDS = 20  # ids shown per list; the manifest keeps them all


def word_times(report: dict[str, Any]) -> dict[str, Any]:
    """How a build's segments got their word times (segments per align_method), how many took a fallback
    (an English transcript timed by the recogniser, or any spread uniformly) and the languages other than
    English; empty for builds that time no words (SDK, MMSA imports)."""
    counters = report.get("counters") or {}
    methods = {k.removeprefix("segments."): v for k, v in counters.items()
               if k.removeprefix("segments.") in ("forced", "asr", "uniform", "given", "none") and v}
    if not methods:
        return {}
    fallbacks = {k.removeprefix("align_fallback."): v for k, v in counters.items() if k.startswith("align_fallback.") and v}
    languages = {k.removeprefix("segments.language."): v for k, v in counters.items()
                 if k.startswith("segments.language.") and v}
    return {"segments": dict(sorted(methods.items())), "fallbacks": sum(fallbacks.values()),
            "fallback_reasons": dict(sorted(fallbacks.items())), "languages": dict(sorted(languages.items()))}


def _word_times_section(manifest: Manifest) -> list[str]:
    counts = word_times(manifest.report)
    if not counts:
        return []
    lines = ["## Word times", "", "| align_method | segments |", "| --- | --- |",
             *[f"| {m} | {n} |" for m, n in counts["segments"].items()], "",
             f"Fallbacks: {counts['fallbacks']}" + (" (" + ", ".join(f"{k} {v}" for k, v in counts["fallback_reasons"].items())
                                                    + "; the build report's notes say why per segment)" if counts["fallbacks"] else ".")]
    if counts["languages"]:
        lines.append("Segments in languages other than English (the segments table's `language`): "
                     + ", ".join(f"{k} {v}" for k, v in counts["languages"].items()) + ".")
    return [*lines, ""]


def shorten_lists(value: Any, n: int = CARD_IDS) -> Any:
    """The report with every list longer than `n` cut to its count and first `n` items, so the card of a large
    release stays readable (MOSEI's missing-id lists run to thousands); `manifest.json` keeps the full lists."""
    if isinstance(value, dict):
        return {k: shorten_lists(v, n) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [shorten_lists(v, n) for v in value[:n]]
        return items if len(value) <= n else {"count": len(value), f"first_{n}": items}
    return value


def _labels_section(manifest: Manifest) -> list[str]:
    """The store's label vocabularies (manifest `labels`), so a reader knows the classes without our code."""
    if not manifest.labels:
        return []
    emo = manifest.emotion_classes
    known = manifest.labels.get("emotion_class_set")
    return ["## Labels", "",
            f"- `emotion_class`: {', '.join(emo) if emo else 'none'}" + (f" ({known})" if known else ""),
            f"- `sentiment_class`: {', '.join(manifest.sentiment_classes)}",
            f"- presence emotions ({', '.join(manifest.labels.get('emotions', []))}): intensity in [0, 3]; a row that "
            "gives any emotion has 0 for the ones it does not list, null only when it gives none", ""]


def _leakage_section(manifest: Manifest) -> list[str]:
    """What a reader of a test score must know: whether test sentences or videos also occur in training."""
    lines = ["## Leakage between splits", "",
             "Segments whose normalised transcript (lower case, no punctuation, at least four words) or video id "
             "occurs in more than one split; scores on such a split partly measure memory.", "", "```",
             *leakage_lines(manifest.report.get("leakage"), examples=10), "```", ""]
    warnings = [w for w in manifest.report.get("warnings", []) if not w.startswith("leakage")]  # shown above
    if warnings:
        lines += ["Build warnings:", "", *[f"- {w}" for w in warnings], ""]
    return lines


def _aligned_holds(manifest: Manifest) -> str:
    """What `aligned/` holds: a store with only utterance-level sets keeps words there and no feature column."""
    words = [n for n, fs in manifest.feature_sets.items() if fs.level == "word"]
    if words:
        return "Word-level feature sets in `aligned/`: " + ", ".join(f"`{n}`" for n in words) + "."
    if manifest.rows("aligned"):
        return "`aligned/` holds the words only: this store has no word-level feature set (see `utterance/`)."
    return "`aligned/` holds nothing: this store has no word-level data."


def _utterance_lines(manifest: Manifest) -> list[str]:
    sets = [n for n, fs in manifest.feature_sets.items() if fs.level == "utterance"]
    if not sets:
        return []
    cols = [f"- `{c['name']}`: {c['doc']}" for c in contract()["tables"]["utterance"]["columns"]]
    cols += [f"- `{c['name']}`: {c['doc']}" for c in contract()["tables"]["utterance"]["per_feature_set"]]
    return ["### utterance", "Utterance-level feature sets (one vector per segment, schema 2): "
            + ", ".join(f"`{n}`" for n in sets) + ".", "", *cols, "",
            "`datasets.load_dataset(STORE, 'utterance')` reads it; join on `segment_id` with `segments`.", ""]


def render_card(manifest: Manifest) -> str:
    rows = {s: manifest.rows("segments", s) for s in SPLITS}
    fs_lines = [
        f"| `{fs.name}` | {fs.level} | {fs.modality} | {fs.dim} | {fs.extractor} {fs.extractor_version} | "
        f"{fs.frame_rate if fs.frame_rate else fs.level + '-level'} | {', '.join(fs.dims[:6])}{' ...' if fs.dim > 6 else ''} |"
        for fs in manifest.feature_sets.values()
    ]
    columns = [f"- `{c['name']}`: {c['doc']}" for c in contract()["tables"]["segments"]["columns"]]
    aligned = [f"- `{c['name']}`: {c['doc']}" for c in contract()["tables"]["aligned"]["columns"]]
    aligned += [f"- `{c['name']}`: {c['doc']}" for c in contract()["tables"]["aligned"]["per_feature_set"]]
    aligned = [_aligned_holds(manifest), "", *aligned]
    utterance = _utterance_lines(manifest)
    report = json.dumps(shorten_lists(manifest.report), indent=2, sort_keys=True, default=str)
    return "\n".join(
        ["---", *_configs(manifest), "---", "",
         f"# {manifest.name}", "",
         f"A multimodal feature store written by mmolre (schema {manifest.schema_version}). Every file is plain Parquet;",
         "`manifest.json` lists each file with its row count and sha256, and each feature set's dimension names and provenance.", "",
         "| split | segments |", "| --- | --- |", *[f"| {s} | {n} |" for s, n in rows.items()], "",
         "## Feature sets", "", "| name | level | modality | dims | extractor | frames/s | dimension names |", "| --- | --- | --- | --- | --- | --- | --- |",
         *fs_lines, "",
         *_labels_section(manifest),
         *_word_times_section(manifest),
         *_leakage_section(manifest),
         "## Layout", "", *[f"- {k}: `{v}`" for k, v in LAYOUT.items()], "",
         "## Tables", "", "### segments", *columns, "", "### aligned", *aligned, "", *utterance,
         "## Reading it without mmolre", "", "```python",
         "import pyarrow.dataset as ds",
         "segments = ds.dataset('segments/train', format='parquet').to_table()",
         "aligned = ds.dataset('aligned/train', format='parquet').to_table()",
         "# or: datasets.load_dataset('parquet', data_files={'train': 'aligned/train/*.parquet'})",
         "```", "",
         "## Build report (drops, imputations, cleaning)", "",
         f"Lists longer than {CARD_IDS} show their count and first {CARD_IDS} ids; `manifest.json` has them in full.", "",
         "```json", report, "```", ""]
    )
