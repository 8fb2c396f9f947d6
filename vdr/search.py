"""Text query -> ranked pages: encode, pooled first stage, exact MaxSim rerank, fused with BM25
over the pages' words (hybrid, the default), top k, and optionally the evidence on each page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from vdr.encoders.base import PageEmbedding, QueryEmbedding
from vdr.encoders.textgrid import NAME as TEXTGRID
from vdr.errors import VdrError
from vdr.evidence import find_evidence
from vdr.heatmap import group_word_pieces, similarity_maps
from vdr.store.base import TIE_SLACK, Hit, Store, ordered
from vdr.token_index import TokenIndex

# Pages each pooled vector kind (rows, cols), or the token first stage, passes to the exact
# rerank. On the dev set (314 pages) this is most of the collection; at scale it bounds
# rerank work per query.
DEFAULT_CANDIDATES = 200
# Queries encoded per forward pass when searching many at once.
QUERY_BATCH = 64
# late: late-interaction MaxSim only; bm25: the pages' words only; hybrid: both, fused.
MODES = ("hybrid", "late", "bm25")
DEFAULT_MODE = "hybrid"
# Hybrid score = (1 - w) x MaxSim + w x BM25, each min-max scaled over its own top
# FUSION_DEPTH pages (0 for a page outside one of them). On ../shared/bench/dev (nDCG@5), with
# stemmed BM25 (0.858 alone) and query stop words left out of MaxSim (0.910 alone):
# w = 0.1: 0.912, 0.2: 0.909, 0.3: 0.903, 0.4: 0.899. Before those two changes (BM25 0.843,
# late 0.891) w = 0.3 was best at 0.905, and reciprocal rank fusion scored 0.873-0.877 (it
# ignores how far apart the scores are). The weight is chosen on the dev set itself, so its
# hybrid figure is slightly optimistic.
TEXT_WEIGHT = 0.1
FUSION_DEPTH = 50
# A page matches a query when match_score reaches this: some content word of the query is on
# the page (its word pieces, in order, at this cosine). Fitted on generated documents and
# queries, never on the dev set, by `python benches/no_match.py` (see BENCHMARKS.md): the
# highest value that calls at most 1% of the true matches there unmatched. Only for the default
# encoder without token pooling, whose page vectors keep a word's pieces in order.
MATCH_THRESHOLD = 0.68
MATCH_THRESHOLDS = {TEXTGRID: MATCH_THRESHOLD}


def search_many(
    embed: Callable[[Sequence[str]], list[QueryEmbedding]],
    store: Store,
    queries: Sequence[str],
    k: int = 10,
    doc_ids: Sequence[str] | None = None,
    candidates: int | None = DEFAULT_CANDIDATES,
    evidence: bool = False,
    mode: str = DEFAULT_MODE,
    tokens: TokenIndex | None = None,
    tokens_fresh: bool = False,
    tokens_rerank: bool = False,
    match_threshold: float | None = None,
) -> list[list[Hit]]:
    """Top k pages for each query, best first.

    embed:      texts -> their QueryEmbeddings (an encoder's encode_queries, or a cache of it).
    candidates: first-stage pool size (None: score every page exactly, for checks).
    doc_ids:    restrict to these documents.
    evidence:   attach each hit's Evidence (reads each hit's full multi-vector: ~k lookups).
    mode:       "hybrid", "late" or "bm25" (see MODES). Scores are MaxSim for late, BM25 for
                bm25, and the fused score in [0, 1] for hybrid. An index made by an older vdr
                (no stemmed BM25 vectors) searches hybrid as late, and refuses bm25.
    tokens:     the index's token first stage, if it has one: its best `candidates` pages are
                reranked too (not for a search restricted to doc_ids, which the pooled stage
                filters as it goes). tokens_fresh: it knows every page (no write since it was
                built), so the pooled stage is left out; otherwise the pooled stage still
                finds the pages written since. tokens_rerank (with tokens_fresh): the token
                index also reranks its pages exactly, from its own int8 vectors, and the
                store only gives the hits' payloads; otherwise the store reranks them.
    match_threshold: set each hit's `matched` to match_score >= it (reads each hit's full
                multi-vector, as evidence does: the two share one read); None leaves
                `matched` None (encoders without a calibrated threshold).
    """
    if k < 1:
        raise VdrError(f"k must be at least 1, got {k}")
    if mode not in MODES:
        raise VdrError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "bm25" and not store.has_text:
        raise VdrError(
            "this index was built before vdr's current BM25 search (stemmed terms): re-index "
            "into a new folder"
        )
    if not store.has_text:
        mode = "late"
    depth = max(k, FUSION_DEPTH) if mode == "hybrid" else k
    results = []
    for start in range(0, len(queries), QUERY_BATCH):
        batch = queries[start : start + QUERY_BATCH]
        for text, embedding in zip(batch, embed(batch), strict=True):
            vectors = embedding.scoring_vectors()
            if not len(vectors):
                raise VdrError(f"the query {text!r} has no words to search for")
            late = []
            if mode != "bm25":
                use_tokens = tokens is not None and candidates and not doc_ids
                if use_tokens and tokens_fresh and tokens_rerank:
                    scored = tokens.search(vectors, depth + TIE_SLACK, candidates)
                    late = store.hits(scored, depth)
                else:
                    picked = tokens.candidates(vectors, candidates) if use_tokens else []
                    pooled = not (picked and tokens_fresh)
                    late = store.search(vectors, depth, candidates, doc_ids, picked, pooled)
            by_text = store.search_text(text, depth, doc_ids) if mode != "late" else []
            hits = fuse(late, by_text, k) if mode == "hybrid" else (late or by_text)
            results.append(
                [_finished(store, embedding, h, evidence, match_threshold) for h in hits]
            )
    return results


def matched(hits: Sequence[Hit]) -> bool | None:
    """Whether any hit matched its query (False for no hits; None when none was judged)."""
    judged = [h.matched for h in hits if h.matched is not None]
    return any(judged) if judged or not hits else None


def match_score(query: QueryEmbedding, page: PageEmbedding) -> float:
    """The best similarity any content word of the query reaches on the page: for each word
    (its scoring tokens, word pieces joined), the mean cosine of its pieces against as many
    consecutive page vectors, at the best place on the page; the best word's (-1: no vectors).

    Taking pieces in order is what tells "juf" (ju + ##f, each of which matches some piece
    somewhere) from a word printed on the page. Meant for encoders whose page vectors keep a
    block's word pieces in reading order (the default encoder, unpooled).
    """
    vectors = query.scoring_vectors()
    if not len(vectors) or not len(page.vectors):
        return -1.0
    tokens = [t for t, keep in zip(query.tokens, query.mask, strict=True) if keep]
    sims = vectors @ page.vectors.T  # [pieces, page vectors]
    pieces = np.asarray(group_word_pieces(tokens)[1])
    best = -1.0
    for word in range(int(pieces.max()) + 1):
        rows = np.flatnonzero(pieces == word)
        span = len(page.vectors) - len(rows) + 1
        if span < 1:
            continue
        in_order = np.mean([sims[r, i : i + span] for i, r in enumerate(rows)], axis=0)
        best = max(best, float(in_order.max()))
    return best


def fuse(late: Sequence[Hit], by_text: Sequence[Hit], k: int) -> list[Hit]:
    """The k best pages by (1 - TEXT_WEIGHT) x scaled MaxSim + TEXT_WEIGHT x scaled BM25."""
    fused: dict[str, Hit] = {}
    for hits, weight in ((late, 1 - TEXT_WEIGHT), (by_text, TEXT_WEIGHT)):
        if not hits:
            continue
        for hit, scaled in zip(hits, _min_max(np.array([h.score for h in hits])), strict=True):
            seen = fused.get(hit.page_id, replace(hit, score=0.0))
            fused[hit.page_id] = replace(seen, score=seen.score + weight * float(scaled))
    return ordered(list(fused.values()))[:k]


def _min_max(scores: np.ndarray) -> np.ndarray:
    """Scores mapped onto [0, 1] (all 1 when they are all equal)."""
    low, high = float(scores.min()), float(scores.max())
    return np.ones_like(scores) if high == low else (scores - low) / (high - low)


def _finished(
    store: Store, query: QueryEmbedding, hit: Hit, evidence: bool, threshold: float | None
) -> Hit:
    """The hit with its evidence (when asked) and `matched` (when a threshold is given)."""
    if not evidence and threshold is None:
        return hit
    page = store.get_page(hit.page_id)
    if page is None:  # deleted between the search and now
        return hit
    if threshold is not None:
        hit = replace(hit, matched=match_score(query, page.embedding) >= threshold)
    if evidence:
        maps = similarity_maps(query, page.embedding)
        hit = replace(hit, evidence=find_evidence(maps, page.words, page.size))
    return hit
