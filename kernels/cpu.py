"""Exact MaxSim on the CPU: document tokens in chunks, one matrix product per chunk, and a
per-document running max taken with np.maximum.reduceat over the product's columns.

The product is where the time goes (2 x q_tokens x dim flops per document token), so it is
done in float32 by torch's BLAS over thousands of document tokens at once; the segment max
then reads the [q_tokens x chunk] result once. Nothing larger than one chunk's similarities is
ever held: q_tokens x CHUNK_TOKENS floats (32 x 65,536 x 4 bytes = 8 MB).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vdr.kernels.reference import check_maxsim_inputs

# Document tokens per matrix product; whole documents are kept together.
CHUNK_TOKENS = 1 << 16


def maxsim_cpu(
    queries: Tensor, docs: Tensor, doc_offsets: Tensor, query_mask: Tensor | None = None
) -> Tensor:
    """Late-interaction scores of every query against every document, on the CPU.

    queries:     [n_queries, q_tokens, dim], any float dtype (computed in float32)
    docs:        [total_doc_tokens, dim], all documents packed end to end (no padding)
    doc_offsets: [n_docs + 1], int64; document i is docs[doc_offsets[i]:doc_offsets[i+1]]
    query_mask:  [n_queries, q_tokens], bool; False tokens add nothing to the score
    returns:     [n_queries, n_docs], float32, on the CPU

    Same contract as maxsim_reference: an empty document or an all-masked query scores 0.
    """
    offsets, mask = check_maxsim_inputs(queries, docs, doc_offsets, query_mask)
    n_queries, q_tokens, dim = queries.shape
    bounds = offsets.cpu().numpy()
    lengths = np.diff(bounds)
    flat = queries.reshape(-1, dim).to(device="cpu", dtype=torch.float32)
    best = np.zeros((n_queries * q_tokens, len(lengths)), np.float32)
    first = 0
    while first < len(lengths):
        # Whole documents up to ~CHUNK_TOKENS tokens, at least one.
        last = int(np.searchsorted(bounds, bounds[first] + CHUNK_TOKENS, side="right")) - 1
        last = min(max(last, first + 1), len(lengths))
        start, stop = int(bounds[first]), int(bounds[last])
        filled = lengths[first:last] > 0
        if stop > start:
            chunk = docs[start:stop].to(device="cpu", dtype=torch.float32)
            sims = (flat @ chunk.T).numpy()  # [n_queries * q_tokens, stop - start]
            # Empty documents have no segment; the others are contiguous runs of columns.
            segments = bounds[first:last][filled] - start
            best[:, np.flatnonzero(filled) + first] = np.maximum.reduceat(sims, segments, axis=1)
        first = last
    per_token = best.reshape(n_queries, q_tokens, -1)
    keep = mask.cpu().numpy()[:, :, None]
    return torch.from_numpy(np.where(keep, per_token, 0.0).sum(axis=1, dtype=np.float32))
