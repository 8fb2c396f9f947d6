"""Text query -> ranked pages: encode, pooled first stage, exact MaxSim rerank, top k, and
optionally the evidence on each page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from vdr.encoders.base import QueryEmbedding
from vdr.errors import VdrError
from vdr.evidence import find_evidence
from vdr.heatmap import similarity_maps
from vdr.store.base import Hit, Store

# Pages each pooled vector kind (rows, cols) passes to the exact rerank. On the dev set
# (314 pages) this is most of the collection; at scale it bounds rerank work per query.
DEFAULT_CANDIDATES = 200
# Queries encoded per forward pass when searching many at once.
QUERY_BATCH = 64


def search_many(
    embed: Callable[[Sequence[str]], list[QueryEmbedding]],
    store: Store,
    queries: Sequence[str],
    k: int = 10,
    doc_ids: Sequence[str] | None = None,
    candidates: int | None = DEFAULT_CANDIDATES,
    evidence: bool = False,
) -> list[list[Hit]]:
    """Top k pages for each query, best first.

    embed:      texts -> their QueryEmbeddings (an encoder's encode_queries, or a cache of it).
    candidates: first-stage pool size (None: score every page exactly, for checks).
    doc_ids:    restrict to these documents.
    evidence:   attach each hit's Evidence (reads each hit's full multi-vector: ~k lookups).
    """
    if k < 1:
        raise VdrError(f"k must be at least 1, got {k}")
    results = []
    for start in range(0, len(queries), QUERY_BATCH):
        batch = queries[start : start + QUERY_BATCH]
        for text, embedding in zip(batch, embed(batch), strict=True):
            vectors = embedding.scoring_vectors()
            if not len(vectors):
                raise VdrError(f"the query {text!r} has no words to search for")
            hits = store.search(vectors, k, candidates, doc_ids)
            results.append(
                [_with_evidence(store, embedding, h) for h in hits] if evidence else hits
            )
    return results


def _with_evidence(store: Store, query: QueryEmbedding, hit: Hit) -> Hit:
    page = store.get_page(hit.page_id)
    if page is None:  # deleted between the search and now
        return hit
    maps = similarity_maps(query, page.embedding)
    return replace(hit, evidence=find_evidence(maps, page.words, page.size))
