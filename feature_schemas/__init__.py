"""The versioned contract of the mmolre Parquet feature store: tables, columns, dimension names, provenance.

Depends on nothing of ours; readers need only pyarrow.
"""

from .arrays import (
    column_lists,
    column_vectors,
    list_of_values,
    list_of_vectors,
    utterance_vectors,
    vectors_to_arrow,
)
from .errors import ChecksumError, SchemaVersionError, StoreError
from .feature_set import FeatureSet
from .manifest import (
    TEMPORARY_GLOB,
    FileEntry,
    Manifest,
    atomic_path,
    atomic_write_text,
    file_problem,
    schema_major,
    sha256_file,
)
from .reader import Store
from .spec import (
    COVERAGE_SUFFIX,
    EMOTIONS,
    LAYOUT,
    LEVELS,
    PRESENT_SUFFIX,
    READABLE_MAJORS,
    SCHEMA_VERSION,
    SPLITS,
    aligned_schema,
    contract,
    coverage_column,
    failures_schema,
    frames_schema,
    present_column,
    segments_schema,
    table_dir,
    table_path,
    utterance_schema,
)
from .validate import (
    Problem,
    ValidationReport,
    validate,
    validate_aligned,
    validate_failures,
    validate_frames,
    validate_segments,
    validate_utterance,
)

__all__ = [
    "COVERAGE_SUFFIX", "EMOTIONS", "LAYOUT", "SCHEMA_VERSION", "SPLITS",
    "ChecksumError", "FeatureSet", "FileEntry", "Manifest", "Problem", "SchemaVersionError", "Store", "StoreError",
    "ValidationReport", "aligned_schema", "TEMPORARY_GLOB", "atomic_path", "atomic_write_text", "file_problem", "contract", "column_lists", "column_vectors", "coverage_column",
    "failures_schema", "frames_schema", "list_of_values", "list_of_vectors", "segments_schema", "sha256_file",
    "table_dir", "table_path", "validate", "validate_aligned", "validate_failures", "validate_frames", "validate_segments",
    "vectors_to_arrow",
    # schema 2: utterance-level feature sets
    "LEVELS", "PRESENT_SUFFIX", "READABLE_MAJORS", "present_column", "schema_major", "utterance_schema",
    "utterance_vectors", "validate_utterance",
]
