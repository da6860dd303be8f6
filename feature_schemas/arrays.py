"""Conversions between Arrow list columns and numpy arrays, shared by writers and readers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def vectors_to_arrow(values: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float array -> Arrow fixed_size_list<float32, D> of length N."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D array (frames x dims), got shape {values.shape}")
    n, d = values.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=pa.float32()), d)


def list_of_vectors(rows: list[np.ndarray], dim: int) -> pa.ListArray:
    """One (N_i, D) array per row -> list<fixed_size_list<float32, D>>."""
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    flat = np.concatenate([np.asarray(r, dtype=np.float32).reshape(-1, dim) for r in rows]) if rows else np.zeros((0, dim), np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), vectors_to_arrow(flat))


def list_of_values(rows: list[np.ndarray], type: pa.DataType) -> pa.ListArray:
    """One 1-D array per row -> list<type>, NaN stored as null; built from offsets and one buffer."""
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    dtype = type.to_pandas_dtype()
    flat = np.concatenate([np.asarray(r, dtype=dtype).reshape(-1) for r in rows]) if rows else np.zeros(0, dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=type, from_pandas=True))


def column_vectors(column: pa.ChunkedArray | pa.ListArray) -> list[np.ndarray]:
    """A whole list<fixed_size_list> column -> one (N_i, D) array per row, slicing one flat buffer."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    d = column.type.value_type.list_size
    offsets = column.offsets.to_numpy()
    flat = column.values.flatten().to_numpy(zero_copy_only=False).reshape(-1, d)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(column))]


def column_lists(column: pa.ChunkedArray | pa.ListArray, dtype: type = np.float32) -> list[np.ndarray]:
    """A list<primitive> column -> one 1-D array per row (nulls become NaN)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    offsets = column.offsets.to_numpy()
    values = column.values
    if pa.types.is_floating(values.type):
        flat = values.fill_null(float("nan")).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    else:
        flat = values.to_numpy(zero_copy_only=False)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(column))]


def utterance_vectors(column: pa.ChunkedArray | pa.FixedSizeListArray) -> np.ndarray:
    """A fixed_size_list<float32, D> column (one vector per segment) -> an (N, D) float32 array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    d = column.type.list_size
    if len(column) == 0:
        return np.zeros((0, d), np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, np.float32).reshape(-1, d)
