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
from .labels import (
    CREMAD_EMOTION_CLASSES,
    EMOTION_CLASS_SETS,
    IEMOCAP_EMOTION_CLASSES,
    LEGACY_EMOTION_CLASSES,
    MELD_EMOTION_CLASSES,
    MOSEI_EMOTIONS,
    RAVDESS_EMOTION_CLASSES,
    SENTIMENT_CLASSES,
    ClassSet,
    class_name,
    emotion_class_set,
    labels_record,
    recorded_emotion_classes,
    recorded_sentiment_classes,
)
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
from .paths import BUILD_DIR, OutsideStoreError, StoreLinkError, contained, no_links, store_links, table_roots
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
    "BUILD_DIR", "COVERAGE_SUFFIX", "EMOTIONS", "OutsideStoreError", "StoreLinkError", "contained", "no_links", "store_links", "table_roots", "LAYOUT", "SCHEMA_VERSION", "SPLITS",
    "ChecksumError", "FeatureSet", "FileEntry", "Manifest", "Problem", "SchemaVersionError", "Store", "StoreError",
    "ValidationReport", "aligned_schema", "TEMPORARY_GLOB", "atomic_path", "atomic_write_text", "file_problem", "contract", "column_lists", "column_vectors", "coverage_column",
    "failures_schema", "frames_schema", "list_of_values", "list_of_vectors", "segments_schema", "sha256_file",
    "table_dir", "table_path", "validate", "validate_aligned", "validate_failures", "validate_frames", "validate_segments",
    "vectors_to_arrow",
    # label vocabularies (feature_schemas.labels)
    "CREMAD_EMOTION_CLASSES", "EMOTION_CLASS_SETS", "IEMOCAP_EMOTION_CLASSES", "LEGACY_EMOTION_CLASSES",
    "MELD_EMOTION_CLASSES", "MOSEI_EMOTIONS", "RAVDESS_EMOTION_CLASSES", "SENTIMENT_CLASSES", "ClassSet", "class_name",
    "emotion_class_set", "labels_record", "recorded_emotion_classes", "recorded_sentiment_classes",
    # schema 2: utterance-level feature sets
    "LEVELS", "PRESENT_SUFFIX", "READABLE_MAJORS", "present_column", "schema_major", "utterance_schema",
    "utterance_vectors", "validate_utterance",
]
