"""Error types of the store contract; each names the file, table or row it is about."""

from __future__ import annotations


class StoreError(Exception):
    """Something about a feature store on disk is wrong (missing, corrupt, incompatible)."""


class SchemaVersionError(StoreError):
    """The store was written under a schema version this code cannot read."""


class ChecksumError(StoreError):
    """A store file no longer matches the sha256 recorded in its manifest."""
