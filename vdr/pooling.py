"""First-stage vectors: a page's multi-vector mean-pooled along its grid's rows and columns.

Qdrant's recipe for ColPali: HNSW over a few dozen pooled vectors per page finds candidates
cheaply; the full multi-vector (one per patch or token) then reranks them exactly.
"""

from __future__ import annotations

import numpy as np

from vdr.encoders.base import PageEmbedding


def pool_rows_cols(embedding: PageEmbedding) -> tuple[np.ndarray, np.ndarray]:
    """([r, dim], [c, dim]) float32 means of the vectors in each non-empty grid row / column.

    Rows or columns without any vector are left out rather than given a zero vector, which
    would add nothing to MaxSim but cost space. A page with no vectors gets one zero vector
    in each, so it is still a valid point that scores 0.
    """
    _, cols = embedding.grid
    row_of = embedding.patch_index // cols
    col_of = embedding.patch_index % cols
    return _group_means(embedding.vectors, row_of), _group_means(embedding.vectors, col_of)


def _group_means(vectors: np.ndarray, group: np.ndarray) -> np.ndarray:
    if not len(vectors):
        return np.zeros((1, vectors.shape[1]), np.float32)
    # Sort by group, then sum each run (np.add.at is ~50x slower for this).
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    sums = np.add.reduceat(vectors[order].astype(np.float64), starts, axis=0)
    counts = np.diff(np.r_[starts, len(group)])[:, None]
    return (sums / counts).astype(np.float32)
