"""Exact MaxSim on the CPU: documents in chunks, one matrix product per chunk, then each query
token's maximum over each document's tokens.

The product is where the time goes (2 x q_tokens x dim flops per document token). Two ways:

- bf16 screen, where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX; ~4x the float32
  rate on the 2-core EPYC we measure on): the product is taken in bf16, which fixes every
  (query token, document) maximum to within a proven error bound (kernels/bf16_screen.py); the
  few document tokens within that bound of the bf16 maximum (~1.5 per pair on random unit
  vectors) are scored again in float32 and the largest is the answer. Exact, not approximate:
  the result is a float32 dot product of the inputs, as in the float32 path.
- float32 elsewhere: torch's BLAS product, then np.maximum.reduceat over each document's columns.

Nothing larger than one chunk's similarities is held: kept query tokens x CHUNK_TOKENS values
for float32 (32 x 65,536 x 4 bytes = 8 MB), ~SCREEN_PRODUCT_VALUES per core for the screen.
Masked query tokens are not scored. Inputs must be finite.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vdr.kernels.reference import check_maxsim_inputs

# Document tokens per matrix product; whole documents are kept together.
CHUNK_TOKENS = 1 << 16
# The bf16 screen reads each chunk's product twice more and rescores from its documents, so its
# chunks are cut to keep the product near 2^18 values (512 KB of bf16) and the chunk's bf16 copy
# (2 MB) in cache: 8,192 tokens for a 32-token query, 1 x 10,000 documents in 0.54 s against
# 0.68 s with 65,536 (never above CHUNK_TOKENS).
SCREEN_PRODUCT_VALUES = 1 << 18
SCREEN_MIN_TOKENS = 2048


def maxsim_cpu(
    queries: Tensor,
    docs: Tensor,
    doc_offsets: Tensor,
    query_mask: Tensor | None = None,
    bf16_screen: bool | None = None,
) -> Tensor:
    """Late-interaction scores of every query against every document, on the CPU.

    queries:     [n_queries, q_tokens, dim], any float dtype (computed in float32)
    docs:        [total_doc_tokens, dim], all documents packed end to end (no padding)
    doc_offsets: [n_docs + 1], int64; document i is docs[doc_offsets[i]:doc_offsets[i+1]]
    query_mask:  [n_queries, q_tokens], bool; False tokens add nothing to the score
    bf16_screen: screen with bf16 products, then settle in float32 (None: where the CPU
                 multiplies bf16 natively); the scores are float32 either way
    returns:     [n_queries, n_docs], float32, on the CPU

    Same contract as maxsim_reference: an empty document or an all-masked query scores 0.
    """
    offsets, mask = check_maxsim_inputs(queries, docs, doc_offsets, query_mask)
    n_queries, q_tokens, dim = queries.shape
    bounds = offsets.cpu().numpy()
    # Only the tokens the mask keeps are scored: padding rows would cost as much as real ones
    # (and, being zero vectors, make every document token a candidate of the bf16 screen).
    kept = mask.cpu().numpy().reshape(-1)
    flat = queries.reshape(-1, dim).to(device="cpu", dtype=torch.float32)
    flat = flat[torch.from_numpy(kept)].contiguous()
    best = np.zeros((len(flat), len(bounds) - 1), np.float32)
    screen = native_bf16() if bf16_screen is None else bf16_screen

    def score_chunk(documents: tuple[int, int]) -> None:
        first, last = documents
        start, stop = int(bounds[first]), int(bounds[last])
        chunk = docs[start:stop].to(device="cpu", dtype=torch.float32).contiguous()
        segments = bounds[first : last + 1] - start
        maxima = _screened_maxima if screen else _float32_maxima
        maxima(flat, chunk, segments, best[:, first:last])  # disjoint columns per chunk

    # Chunks of only empty documents score 0 as they are.
    tokens = CHUNK_TOKENS
    if screen:
        tokens = min(tokens, max(SCREEN_MIN_TOKENS, SCREEN_PRODUCT_VALUES // max(1, len(flat))))
    chunks = [
        (first, last) for first, last in _chunks(bounds, tokens) if bounds[last] > bounds[first]
    ]
    if screen:
        # One chunk per core at a time, each thread single-threaded (set_num_threads is per
        # thread): see kernels/bf16_screen.py.
        with ThreadPoolExecutor(
            torch.get_num_threads(), initializer=torch.set_num_threads, initargs=(1,)
        ) as pool:
            list(pool.map(score_chunk, chunks))
    else:
        for documents in chunks:  # torch's BLAS already uses every core
            score_chunk(documents)
    per_token = np.zeros((n_queries * q_tokens, len(bounds) - 1), np.float32)
    per_token[kept] = best
    return torch.from_numpy(per_token.reshape(n_queries, q_tokens, -1).sum(axis=1))


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (Linux flags avx512_bf16 or amx_bf16);
    without it torch emulates bf16 products, slower than float32 ones."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _chunks(bounds: np.ndarray, tokens: int) -> Iterator[tuple[int, int]]:
    """(first, last) document ranges of ~`tokens` tokens, at least one document each."""
    n_docs, first = len(bounds) - 1, 0
    while first < n_docs:
        last = int(np.searchsorted(bounds, bounds[first] + tokens, side="right")) - 1
        last = min(max(last, first + 1), n_docs)
        yield first, last
        first = last


def _float32_maxima(queries: Tensor, chunk: Tensor, segments: np.ndarray, best: np.ndarray) -> None:
    """best[:, s] = max over document s's tokens of queries @ its tokens, in float32."""
    sims = (queries @ chunk.T).numpy()  # [query tokens, chunk tokens]
    filled = segments[1:] > segments[:-1]  # empty documents have no columns to reduce
    best[:, filled] = np.maximum.reduceat(sims, segments[:-1][filled], axis=1)


def _screened_maxima(
    queries: Tensor, chunk: Tensor, segments: np.ndarray, best: np.ndarray
) -> None:
    """The same maxima through the bf16 screen (see the module docstring)."""
    from vdr.kernels.bf16_screen import bf16_bits_and_norms, bf16_error_bound, settle_maxima

    docs = chunk.numpy()
    n, dim = docs.shape
    rows = len(queries)
    bits = _scratch("bits", n * dim).reshape(n, dim)
    doc_norms = np.empty(len(segments) - 1, np.float32)
    bf16_bits_and_norms(docs, segments, bits.view(np.uint16), doc_norms)
    sims = _scratch("sims", rows * n).reshape(rows, n)  # bf16 bits of the product
    torch.matmul(
        queries.to(torch.bfloat16),
        torch.from_numpy(bits).view(torch.bfloat16).T,
        out=torch.from_numpy(sims).view(torch.bfloat16),
    )
    query_norms = torch.linalg.vector_norm(queries, dim=1).numpy() * np.float32(1 + 1e-5)
    bound = bf16_error_bound(dim)
    settle_maxima(sims, segments, queries.numpy(), docs, query_norms, doc_norms, bound, best)


_thread_scratch = threading.local()


def _scratch(name: str, size: int) -> np.ndarray:
    """A per-thread int16 buffer of `size` elements, reused from chunk to chunk: a fresh 16 MB
    array per chunk costs its page faults again every time (~1 ms)."""
    buffer = getattr(_thread_scratch, name, None)
    if buffer is None or len(buffer) < size:
        buffer = np.empty(size, np.int16)
        setattr(_thread_scratch, name, buffer)
    return buffer[:size]
