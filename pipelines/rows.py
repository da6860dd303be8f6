"""Reading a table's rows so that one bad row costs only itself: a JSONL line that is no object, nested too
deep or too long, and a CSV field over the size limit become a `BadRow` (its reader fails that row, naming why)
instead of failing the whole file; the rest of the file builds."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

from .errors import PipelineError

MAX_FIELD = 1 << 20  # characters in one CSV field or JSONL line: a longer one fails its row, not the file
MAX_DEPTH = 32  # nesting of one JSONL row (a manifest row is flat; `emotions` is one level)


class BadRow(dict):  # type: ignore[type-arg]
    """A row that could not be read (a JSONL line that is no object, too deep, or too long; an over-long CSV
    field): empty, with its `problem`; every reader fails it alone (`check_row`) and reads the rest."""

    def __init__(self, problem: str) -> None:
        super().__init__()
        self.problem = problem


def _depth(obj: Any) -> int:
    deepest, todo = 0, [(obj, 1)]
    while todo:
        item, d = todo.pop()
        deepest = max(deepest, d)
        if isinstance(item, dict):
            todo += [(v, d + 1) for v in item.values()]
        elif isinstance(item, list):
            todo += [(v, d + 1) for v in item]
    return deepest


def json_row(path: object, n: int, line: str) -> dict[str, Any]:
    if len(line) > MAX_FIELD:
        return BadRow(f"line {n} is {len(line):,} characters long (over {MAX_FIELD:,})")
    try:
        obj = json.loads(line)
    except RecursionError:
        return BadRow(f"line {n} is nested too deeply to read")
    except json.JSONDecodeError as e:
        raise PipelineError(f"{path}: line {n} is not JSON: {e}", stage="read", source_path=str(path)) from None
    if not isinstance(obj, dict):
        return BadRow(f"line {n} is a JSON {type(obj).__name__}, not an object of columns")
    if (depth := _depth(obj)) > MAX_DEPTH:
        return BadRow(f"line {n} is nested {depth} levels deep (a row holds at most {MAX_DEPTH})")
    return obj


def csv_rows(lines: Any, delimiter: str) -> list[dict[str, Any]]:
    """Rows of a CSV; the csv module's field limit (128 KiB, which failed the whole file) is lifted while
    parsing, and a field longer than MAX_FIELD fails its own row."""
    limit = csv.field_size_limit(sys.maxsize)
    try:
        rows: list[dict[str, Any]] = []
        for r in csv.DictReader(lines, delimiter=delimiter):
            long = next(((k, v) for k, v in r.items() if isinstance(v, str) and len(v) > MAX_FIELD), None)
            rows.append(dict(r) if long is None else
                        BadRow(f"field {long[0]!r} is {len(long[1]):,} characters long (over {MAX_FIELD:,})"))
        return rows
    finally:
        csv.field_size_limit(limit)
