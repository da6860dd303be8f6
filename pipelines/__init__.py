"""Ingestion, extraction, word alignment, collapse and shard writing: inputs in, a feature store out.

Recipes (`pipelines.recipes`) turn an input (the SDK's .csd release, MMSA pickles, manifests, videos) into work
units; the store writer processes units on any executor and writes the store the `feature_schemas` contract
describes. Nothing here knows Prefect. Depends on `feature_schemas` only.
"""

from .build import build_store, run_build
from .collapse import CollapseConfig, Collapsed, collapse, collapse_segment
from .errors import PipelineError
from .records import Failure, FrameFeatures, SegmentRecord, UnitResult, WordFeatures, Words, WorkUnit
from .store_writer import BuildConfig, BuildPlan, BuildResult

__all__ = [
    "BuildConfig", "BuildPlan", "BuildResult", "CollapseConfig", "Collapsed", "Failure", "FrameFeatures", "PipelineError",
    "SegmentRecord", "UnitResult", "WordFeatures", "Words", "WorkUnit", "build_store", "collapse", "collapse_segment",
    "run_build",
]
