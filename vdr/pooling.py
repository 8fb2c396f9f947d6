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
    vector_of, patch_of = embedding.placements()
    vectors = embedding.vectors[vector_of]
    return _group_means(vectors, patch_of // cols), _group_means(vectors, patch_of % cols)


def pool_tokens(embedding: PageEmbedding, factor: int) -> PageEmbedding:
    """About n / factor vectors instead of n: colpali-engine's hierarchical token pooling
    (Ward clustering of the page's vectors, each cluster's normalised mean).

    Every original vector's patch stays covered by its cluster's vector (PageEmbedding.covers),
    so heatmaps and the row/column first stage still see the whole page. factor <= 1, or a
    page of fewer than two vectors, is returned unchanged.
    """
    n = len(embedding.vectors)
    if factor <= 1 or n < 2:
        return embedding
    import torch
    from colpali_engine.compression.token_pooling import HierarchicalTokenPooler

    pooled = HierarchicalTokenPooler().pool_embeddings(
        [torch.from_numpy(embedding.vectors)], pool_factor=factor, return_dict=True
    )
    clusters = [members[0].numpy() for members in pooled.cluster_id_to_indices[0].values()]
    clusters = [members for members in clusters if len(members)]  # pooled rows skip empty ones
    vector_of, patch_of = embedding.placements()
    cluster_of = np.empty(n, dtype=np.int32)
    for number, members in enumerate(clusters):
        cluster_of[members] = number
    return PageEmbedding(
        vectors=pooled.pooled_embeddings[0].numpy().astype(np.float32),
        patch_index=np.array([patch_of[members[0]] for members in clusters], dtype=np.int32),
        grid=embedding.grid,
        covers=(cluster_of[vector_of], patch_of.astype(np.int32)),
    )


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
