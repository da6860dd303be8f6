"""Errors of `pipelines`: what went wrong with an input, naming the file or segment, never a library traceback."""

from __future__ import annotations


class PipelineError(Exception):
    """An input could not be processed; the message names the file or segment and what is wrong."""

    def __init__(self, message: str, stage: str = "read", item_id: str | None = None, source_path: str | None = None):
        super().__init__(message)
        self.stage = stage
        self.item_id = item_id
        self.source_path = source_path


class MmsaPickleError(PipelineError):
    """A pickle holds something other than numpy arrays and plain containers, or is not MMSA's layout."""


FETCH_STAGE = "fetch"  # a worker could not read an input from storage: the shard is tried again by the next run
