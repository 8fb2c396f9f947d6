"""The compiled halves of the CPU path's bfloat16 screen (see vdr.kernels.cpu), in numba.

Imported on first use: compiling takes a few seconds once (then cached beside this file), and
numba is not needed by anything else that imports vdr.kernels.

Both functions are single-threaded and release the GIL: maxsim_cpu runs one chunk of documents
per core, each thread doing its own bf16 product in between (numba's and torch's thread pools,
taking turns on the same cores, measured 2x slower). They are fastmath: they may reorder float32
sums, as BLAS does, which the error bound below allows for.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# bfloat16 keeps 8 significant bits: rounding to it moves a value by at most U of itself.
U = 2.0**-8


def bf16_error_bound(dim: int) -> float:
    """How far a bf16 similarity, as the screen computes it, can be from the float32 one, per
    unit of |query token| x |document token|:
    rounding both vectors to bf16 (2U + U^2), the float32 sum of `dim` exact bf16 products
    (dim x 2^-24, for any order of addition), and rounding that sum to bf16 (U); 1% to spare.
    """
    return 1.01 * ((2 * U + U * U) + (dim * 2.0**-24 + U) * (1 + U) ** 2)


@njit(nogil=True, fastmath=True, cache=True)
def bf16_bits_and_norms(
    docs: np.ndarray, bounds: np.ndarray, bits: np.ndarray, norms: np.ndarray
) -> None:
    """Round docs [n, dim] float32 to bfloat16 (to nearest even) into bits [n, dim] uint16, and
    write each document's largest token norm into norms [n_docs] float32, in one read of docs.

    bounds: [n_docs + 1] int64 token offsets of the documents in docs.
    """
    for s in range(len(bounds) - 1):
        largest = np.float32(0.0)
        for j in range(bounds[s], bounds[s + 1]):
            squares = np.float32(0.0)
            for k in range(docs.shape[1]):
                x = docs[j, k]
                squares += x * x
                b = np.float32(x).view(np.uint32)
                b = b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))
                bits[j, k] = np.uint16(b >> np.uint32(16))
            largest = max(largest, squares)
        norms[s] = math.sqrt(largest) * np.float32(1.0 + 1e-5)


@njit(inline="always")
def _order_key(bits: np.int16) -> np.int16:
    """bf16 bits as an int16 that sorts like the value: negative values (sign bit set, so
    negative int16s) have their magnitude bits flipped. Integer max and compare vectorise."""
    return bits ^ ((bits >> np.int16(15)) & np.int16(0x7FFF))


@njit(inline="always")
def _key_to_float(key: np.int16) -> np.float32:
    bits = key ^ ((key >> np.int16(15)) & np.int16(0x7FFF))
    return np.uint32(np.uint32(np.uint16(bits)) << np.uint32(16)).view(np.float32)


@njit(inline="always")
def _key_at_most(value: np.float32) -> np.int16:
    """The order key of the largest bf16 value <= `value` (float32 rounded toward -inf)."""
    bits = np.float32(value).view(np.uint32)
    high = bits >> np.uint32(16)
    if bits & np.uint32(0x80000000) and bits & np.uint32(0xFFFF):
        high += np.uint32(1)  # a negative value truncated toward zero would round up
    return _order_key(np.int16(np.uint16(high)))


@njit(nogil=True, fastmath=True, cache=True)
def settle_maxima(
    sims: np.ndarray,
    bounds: np.ndarray,
    queries: np.ndarray,
    docs: np.ndarray,
    query_norms: np.ndarray,
    doc_norms: np.ndarray,
    bound: float,
    best: np.ndarray,
) -> None:
    """Each query token's exact float32 maximum over each document's tokens, from the bf16
    similarities: only tokens within twice the error bound of the bf16 maximum can hold the
    true one, and just those are scored again in float32.

    sims:   [rows, n] int16, the bf16 bits of queries x docs^T (rows = query tokens)
    bounds: [n_docs + 1] int64 token offsets; queries [rows, dim], docs [n, dim] float32
    query_norms [rows], doc_norms [n_docs]: float32 norms (a document's largest token norm)
    bound:  bf16_error_bound(dim)
    best:   [rows, n_docs] float32 out; empty documents are left as they are.
    """
    keys = np.empty(sims.shape[1], np.int16)
    for r in range(sims.shape[0]):
        for j in range(sims.shape[1]):  # the row's keys at once: one tight, vectorised loop
            keys[j] = _order_key(sims[r, j])
        for s in range(len(bounds) - 1):
            start, stop = bounds[s], bounds[s + 1]
            if start == stop:
                continue
            top = keys[start:stop].max()
            floor = _key_to_float(top) - 2 * bound * query_norms[r] * doc_norms[s]
            floor_key = _key_at_most(floor)
            exact = np.float32(-np.inf)
            for j in range(start, stop):
                if keys[j] >= floor_key:
                    dot = np.float32(0.0)
                    for k in range(docs.shape[1]):
                        dot += queries[r, k] * docs[j, k]
                    exact = max(exact, dot)
            best[r, s] = exact
