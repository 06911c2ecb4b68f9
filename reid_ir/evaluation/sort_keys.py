"""Sorting keys: (row, distance, column) packed into one uint64.

One ``np.sort`` of such keys orders candidates by row, then distance, then
gallery index (the tie rule of ``reid_ir.evaluation``). Used by the ranking
(:mod:`reid_ir.evaluation.ranking`) and the k-NN search
(:func:`reid_ir.evaluation.search.smallest_k`).
"""

from __future__ import annotations

import numpy as np


def key_layout(num_cols: int) -> tuple[int, int]:
    """Bits for the column and the largest row count a packed key can hold.

    Args:
        num_cols: number of gallery columns.

    Returns:
        (col_bits, max_rows): a key is ``row << (32 + col_bits) | dist << col_bits | col``.
    """
    col_bits = max(1, int(num_cols - 1).bit_length())
    row_bits = 64 - 32 - col_bits
    if row_bits < 1:
        raise ValueError(f"gallery too large for packed keys: {num_cols} items")
    return col_bits, 1 << min(row_bits, 40)


def float_order_bits(values: np.ndarray) -> np.ndarray:
    """Map float32 values to uint64 codes (< 2**32) with the same order.

    -0.0 and 0.0 get the same code (they compare equal).
    """
    v = np.asarray(values, dtype=np.float32) + np.float32(0.0)  # -0.0 -> 0.0
    bits = v.view(np.uint32)
    neg = bits >= np.uint32(0x80000000)
    return np.where(neg, ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)


def pack_codes(rows: np.ndarray, codes: np.ndarray, cols: np.ndarray, col_bits: int) -> np.ndarray:
    """Pack (row, 32-bit order code, col) into sortable uint64 keys (1-D arrays)."""
    keys = rows.astype(np.uint64) << np.uint64(32 + col_bits)
    keys |= codes.astype(np.uint64) << np.uint64(col_bits)
    keys |= cols.astype(np.uint64)
    return keys


def pack_keys(rows: np.ndarray, values: np.ndarray, cols: np.ndarray, col_bits: int) -> np.ndarray:
    """Pack (row, float32 value, col) into sortable uint64 keys (1-D arrays)."""
    return pack_codes(rows, float_order_bits(values), cols, col_bits)


def unpack_keys(keys: np.ndarray, col_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (rows, cols) int64 from packed keys."""
    rows = (keys >> np.uint64(32 + col_bits)).astype(np.int64)
    cols = (keys & np.uint64((1 << col_bits) - 1)).astype(np.int64)
    return rows, cols
