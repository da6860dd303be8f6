"""Build and training summaries for logs, the CLI and Prefect artifacts."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from feature_schemas import SPLITS, Store

_NUMBER = re.compile(r"\d+(\.\d+)?")


def _reason_kind(row: dict[str, Any]) -> str:
    """A failure's reason with its item id, path and numbers blanked, so that one cause counts once."""
    reason = str(row.get("reason") or "")
    if row.get("source_path"):
        reason = reason.replace(str(row["source_path"]), "<path>")
    if row.get("item_id"):
        reason = re.sub(rf"(?<![\w.-]){re.escape(str(row['item_id']))}(?![\w.-])", "<id>", reason)
    return f"[{row.get('stage')}] " + _NUMBER.sub("N", reason)


def failure_rows(store: Any) -> list[dict[str, Any]]:
    """A store's failures table (none: empty)."""
    s = Store(store)
    return s.dataset("failures").to_table().to_pylist() if s.files("failures") else []


def top_failure_reasons(rows: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    """The `n` most common failure causes among a store's failure rows: count, the cause, and one failure's own
    reason."""
    kinds = Counter(_reason_kind(r) for r in rows)
    example = {}
    for r in rows:
        example.setdefault(_reason_kind(r), r)
    return [{"count": c, "stage": example[k]["stage"], "example": example[k]["reason"], "item_id": example[k]["item_id"]}
            for k, c in sorted(kinds.items(), key=lambda kc: (-kc[1], kc[0]))[:n]]


def word_times_line(wt: dict[str, Any]) -> str:
    """A build's word-time counts (`pipelines.card.word_times`) on one line."""
    return (", ".join(f"{k} {v}" for k, v in wt["segments"].items()) + f"; {wt['fallbacks']} fallbacks"
            + "".join(f"; {k} {v}" for k, v in wt["fallback_reasons"].items())
            + ("; languages: " + ", ".join(f"{k} {v}" for k, v in wt["languages"].items()) if wt["languages"] else ""))


def summarize_build(result: Any) -> dict[str, Any]:
    """What a build did, for the CLI (`--json`), the flows' return value and the summary artifact."""
    from pipelines.card import word_times

    m = result.manifest  # as the build just wrote it; the failures are read back once
    failures = failure_rows(result.store) if result.n_failures else []
    return {
        "store": str(result.store),
        "counts": {
            "segments": {s: m.rows("segments", s) for s in SPLITS},
            "shards_written": result.shards_written,
            "shards_skipped": result.shards_skipped,
            "failures": result.n_failures,
        },
        "feature_sets": {n: fs.dim for n, fs in m.feature_sets.items()},
        "failures": failures[:50],
        "report": m.report,
        "incomplete_shards": m.report.get("incomplete_shards", []),
        "leakage": m.report.get("leakage"),
        "warnings": m.report.get("warnings", []),
        "top_failure_reasons": top_failure_reasons(failures),
        "word_times": word_times(m.report),
    }


IDS_SHOWN = 10  # ids listed per drop; the manifest keeps them all


def _ids(ids: Any) -> str:
    """A count and the first ids of a list, escaped for a markdown table or list."""
    ids = list(ids or [])
    shown = ", ".join(f"`{i}`" for i in ids[:IDS_SHOWN])
    return f"{len(ids)}" + (f" ({shown}{', ...' if len(ids) > IDS_SHOWN else ''})" if ids else "")


def _counter_label(key: str) -> str:
    """`nonfinite_frames.covarep` -> `non-finite frames (covarep)`."""
    what, _, where = key.partition(".")
    what = what.replace("nonfinite", "non-finite").replace("_", " ")
    return f"{what} ({where})" if where else what


def _counter_lines(counters: dict[str, int]) -> list[str]:
    """Non-finite values and dropped intervals first (what was cleaned away), then every other counter."""
    cleaned = {k: v for k, v in counters.items() if v and k.startswith(("nonfinite_", "intervals_dropped.", "absent_"))}
    lines = [f"- {_counter_label(k)}: {v}" for k, v in cleaned.items()]
    rest = {k: v for k, v in counters.items() if k not in cleaned}
    if rest:
        lines += ["", "| counter | count |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rest.items()]]
    return lines


def drop_report_lines(report: dict[str, Any]) -> list[str]:
    """The recipe's drop report and the writer's cleaning counters as markdown: ids missing from a sequence,
    labelled videos in no fold, rows rejected, non-finite values; every recipe's keys where it has them."""
    lines: list[str] = []
    if "labelled_videos_in_no_fold" in report:
        lines.append(f"- labelled videos in no fold (not imported): {_ids(report['labelled_videos_in_no_fold'])}")
    for role, ids in (report.get("ids_missing") or {}).items():
        if ids:
            lines.append(f"- ids missing from the `{role}` sequence: {_ids(ids)}")
    for split, ids in (report.get("fold_ids_without_labels") or {}).items():
        if ids:
            lines.append(f"- {split} fold ids without labels: {_ids(ids)}")
    for key, what in (("rows_rejected", "input rows rejected"), ("rows_failed", "release rows failed"),
                      ("without_continuous_label", "segments without a continuous label")):
        if report.get(key):
            lines.append(f"- {what}: {report[key]}")
    for split, n in (report.get("ids_rejected") or {}).items():
        lines.append(f"- {split}: {n} pickle rows rejected (bad or duplicate ids)")
    if report.get("incomplete_shards"):
        lines.append(f"- shards not written (rerun to complete): {_ids(report['incomplete_shards'])}")
    if not lines:
        lines.append("- nothing dropped by the recipe")
    return lines + ["", "### Cleaning counters", "", *_counter_lines(report.get("counters") or {})]


def build_summary_markdown(summary: dict[str, Any]) -> str:
    """The build's Prefect artifact: splits, feature sets, the drop report, leakage, warnings and failures."""
    from pipelines.card import shorten_lists
    from pipelines.leakage import leakage_lines

    c = summary["counts"]
    report = summary.get("report") or {}
    lines = [
        f"# Feature store `{summary['store']}`",
        "",
        "| split | segments |",
        "| --- | --- |",
        *[f"| {s} | {n} |" for s, n in c["segments"].items()],
        "",
        f"Shards written {c['shards_written']}, skipped (already written) {c['shards_skipped']}, failures {c['failures']}.",
        "",
        "| feature set | dims |",
        "| --- | --- |",
        *[f"| {n} | {d} |" for n, d in summary["feature_sets"].items()],
        "",
        "## Drop report",
        "",
        *drop_report_lines(report),
        "",
        "## Leakage between splits",
        "",
        "```",
        *leakage_lines(summary.get("leakage")),
        "```",
    ]
    if summary.get("word_times"):
        lines += ["", "## Word times", "", "segments per align_method: " + word_times_line(summary["word_times"])]
    if summary.get("warnings"):
        lines += ["", "## Warnings", "", *[f"- {w}" for w in summary["warnings"]]]
    if summary.get("top_failure_reasons"):
        lines += ["", "## Top failure reasons", "", "| count | stage | example |", "| --- | --- | --- |"]
        lines += [f"| {r['count']} | {r['stage']} | {_cell(r['example'])} |" for r in summary["top_failure_reasons"]]
    if summary["failures"]:
        lines += ["", "## Failures", "", "| item | stage | reason |", "| --- | --- | --- |"]
        lines += [f"| {_cell(f['item_id'])} | {f['stage']} | {_cell(f['reason'])} |" for f in summary["failures"]]
    full = json.dumps(shorten_lists({k: v for k, v in report.items() if k != "leakage"}, IDS_SHOWN), indent=1,
                      sort_keys=True, default=str)
    lines += ["", "## Full build report", "", "```json", full, "```"]
    return "\n".join(lines)


def _cell(text: Any, width: int = 200) -> str:
    return str(text).replace("|", "/").replace("\n", " ")[:width]


def _is_support(key: str) -> bool:
    return key == "n" or key.endswith(("_n", "_n_pos", "_n_neg", "_ci"))


def metrics_tables(results: dict[str, Any], splits: tuple[str, ...] = ("valid", "test"), level: str = "##") -> list[str]:
    """Markdown tables of a run's metrics, one per split and task, headed by the task's n; a metric the split
    cannot define shows `n/a`, headline metrics their 95% bootstrap interval."""
    from mmolre.report import fmt, fmt_ci

    lines: list[str] = []
    for split in splits:
        block = results.get(split)
        if not block:
            lines += [f"{level} {split}", "", f"No {split} split: nothing scored.", ""]
            continue
        for task_name, metrics in block.items():
            n = f" (n = {fmt(metrics['n'])})" if "n" in metrics else ""
            lines += [f"{level} {split} / {task_name}{n}", "", "| metric | value | 95% CI |", "| --- | --- | --- |"]
            lines += [f"| {k} | {fmt(v)} | {fmt_ci(metrics.get(k + '_ci'))} |" for k, v in metrics.items()
                      if not _is_support(k) and (v is None or isinstance(v, (int, float)))]
            lines.append("")
    return lines


def plots_list(run: str, plots: list[str] | None) -> list[str]:
    """The run's plots as file paths: a Prefect artifact cannot show images from the run folder, and a relative
    image link there renders as a broken image."""
    if not plots:
        return []
    return ["Plots (PNG, in the run folder):", "", *[f"- `{run}/{p}`" for p in plots], ""]


def artifact_markdown(markdown: str, folder: str) -> str:
    """A report's markdown made fit for a Prefect artifact: image links relative to the report's folder cannot be
    shown there (they render as broken images), so each becomes the plot's path as text."""
    def as_text(m: re.Match[str]) -> str:
        alt, target = m.group(1) or "plot", m.group(2)
        if re.match(r"(https?|data):", target):  # a web or inline image shows fine
            return m.group(0)
        return f"{alt}: `{target if target.startswith('/') else folder + '/' + target}`"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", as_text, markdown)


def _task_support(m: dict[str, Any]) -> str:
    """A task's n, with present/absent counts per emotion for presence labels."""
    text = f"n={m.get('n')}"
    emotions = [k[: -len("_n_pos")] for k in m if k.endswith("_n_pos") and not k.startswith(("has0", "non0"))]
    if emotions:
        text += "; present/absent " + ", ".join(f"{e} {m[e + '_n_pos']}/{m[e + '_n_neg']}" for e in emotions)
    return text


def metrics_line(split: str, scores: dict[str, Any]) -> str:
    """The report's headline metrics of one split on one line, per task with its n and 95% intervals;
    `n/a` for a metric the split cannot define."""
    from mmolre.report import HEADLINE, fmt, fmt_ci

    shown = list(dict.fromkeys(k for names in HEADLINE.values() for k in names))  # in the report's order
    parts = []
    for task, m in scores.items():
        if task == "overall" or not isinstance(m, dict):
            continue
        cells = [f"{k}={fmt(m[k])}" + (f" {fmt_ci(m.get(k + '_ci'))}" if m.get(k + "_ci") else "")
                 for k in shown if k in m]
        parts.append(f"{task} ({_task_support(m)}): " + ", ".join(cells))
    return f"{split}: " + ("; ".join(parts) if parts else "nothing scored")
