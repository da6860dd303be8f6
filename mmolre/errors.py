"""Error types of the model package; each names the run directory or file it is about."""

from __future__ import annotations


class RunError(Exception):
    """A training run directory or checkpoint is missing, incomplete or incompatible."""
