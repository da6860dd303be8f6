"""The store's tables as Arrow schemas, built from the versioned data file `schema_v2.json`.

The JSON is the contract; this module only turns it into pyarrow types so that writers and readers
cannot disagree about a column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from functools import cache
from importlib import resources
from typing import Any

import pyarrow as pa

SCHEMA_FILE = "schema_v2.json"


@cache
def contract() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text())


SCHEMA_VERSION: str = contract()["schema_version"]
SPLITS: tuple[str, ...] = tuple(contract()["splits"])
EMOTIONS: tuple[str, ...] = tuple(contract()["emotions"])
LAYOUT: dict[str, str] = dict(contract()["layout"])
READABLE_MAJORS: tuple[int, ...] = tuple(contract()["readable_majors"])  # schema majors this code reads
COVERAGE_SUFFIX = "__coverage"
PRESENT_SUFFIX = "__present"
LEVELS: tuple[str, ...] = ("word", "utterance")

_SIMPLE = {
    "string": pa.string(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
}


def arrow_type(name: str, dim: int | None = None) -> pa.DataType:
    """Parse the JSON's type names (`list<fixed_size_list<float32, D>>` takes `dim`)."""
    name = name.strip()
    if name in _SIMPLE:
        return _SIMPLE[name]
    m = re.fullmatch(r"list<(.*)>", name)
    if m:
        return pa.list_(arrow_type(m.group(1), dim))
    m = re.fullmatch(r"fixed_size_list<(\w+),\s*D>", name)
    if m:
        if dim is None:
            raise ValueError(f"type {name!r} needs a dimension")
        return pa.list_(arrow_type(m.group(1)), dim)
    raise ValueError(f"unknown type {name!r} in {SCHEMA_FILE}")


def _fields(table: str, dim: int | None = None) -> list[pa.Field]:
    cols = contract()["tables"][table]["columns"]
    return [
        pa.field(c["name"], arrow_type(c["type"], dim), nullable=c["nullable"],
                 metadata={"doc": c["doc"], **({"optional": "true"} if c.get("optional") else {})})
        for c in cols
    ]


def is_optional(f: pa.Field) -> bool:
    """A column a minor version added (e.g. 2.1's `words_written`): older files lack it and stay valid."""
    return bool(f.metadata) and f.metadata.get(b"optional") == b"true"



def segments_schema(optional: bool | Collection[str] = False) -> pa.Schema:
    """The segments table; `optional`: the optional columns a minor version added (2.2: `language`,
    `language_probability`, `speaker`) all (True), none (False) or those named."""
    return pa.schema([f for f in _fields("segments") if not is_optional(f) or optional is True
                      or (not isinstance(optional, bool) and f.name in optional)])


def failures_schema() -> pa.Schema:
    return pa.schema(_fields("failures"))


def frames_schema(dim: int) -> pa.Schema:
    return pa.schema(_fields("frames", dim))


def aligned_schema(feature_dims: dict[str, int], with_optional: bool = False) -> pa.Schema:
    """Aligned table for the given feature sets (name -> D), columns in the order given. The optional columns a
    minor version added (2.1: `words_written`) only `with_optional`: writers of this version and readers of files
    that have them ask for them; a table built without them stays valid."""
    fields = [f for f in _fields("aligned") if with_optional or not is_optional(f)]
    per_set = contract()["tables"]["aligned"]["per_feature_set"]
    for name, dim in feature_dims.items():
        for c in per_set:
            col = c["name"].format(feature_set=name)
            fields.append(pa.field(col, arrow_type(c["type"], dim), nullable=c["nullable"], metadata={"doc": c["doc"]}))
    return pa.schema(fields)


def utterance_schema(feature_dims: dict[str, int]) -> pa.Schema:
    """Utterance table (schema 2) for the given utterance-level sets (name -> D), columns in the order given."""
    fields = _fields("utterance")
    per_set = contract()["tables"]["utterance"]["per_feature_set"]
    for name, dim in feature_dims.items():
        for c in per_set:
            col = c["name"].format(feature_set=name)
            fields.append(pa.field(col, arrow_type(c["type"], dim), nullable=c["nullable"], metadata={"doc": c["doc"]}))
    return pa.schema(fields)


def present_column(feature_set: str) -> str:
    return feature_set + PRESENT_SUFFIX


def coverage_column(feature_set: str) -> str:
    return feature_set + COVERAGE_SUFFIX


def table_path(table: str, split: str | None = None, shard: str | None = None, feature_set: str | None = None) -> str:
    """Relative path of one shard, from the layout in the contract."""
    return LAYOUT[table].format(split=split, shard=shard, feature_set=feature_set)


def table_dir(table: str, split: str | None = None, feature_set: str | None = None) -> str:
    """Folder holding one table's shards for one split (a Hugging Face `data_files` glob's folder)."""
    path = LAYOUT[table].format(split=split, shard="*", feature_set=feature_set)
    return path.rsplit("/", 1)[0]
