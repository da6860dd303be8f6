"""Ingestion, extraction, word alignment, collapse and shard writing: inputs in, a feature store out.

A recipe (`pipelines.recipes`: the SDK's .csd release, MMSA pickles, manifests and videos, the bc-LSTM release)
returns a plan: typed units, the stage function that processes them and that stage's options. The build
driver (`pipelines.build`) writes the plan's shards on any executor, each unit through its stage
(`pipelines.stages`), frames collapsed to words (`pipelines.collapse`), and the store writer writes the store
the `feature_schemas` contract describes. Nothing here knows Prefect. Depends on `feature_schemas` only.
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
