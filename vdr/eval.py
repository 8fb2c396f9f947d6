"""Retrieval quality on a labelled set: queries.jsonl + qrels.tsv (format of ../shared/bench/dev).

queries.jsonl: one {"qid", "text", "type"} per line.
qrels.tsv:     qid <TAB> doc_id <TAB> page <TAB> grade; doc_id is the PDF's file stem, page is
               1-based, grade 2 = primary answer, 1 = partial answer.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from vdr.errors import VdrError
from vdr.indexer.discover import content_id, discover
from vdr.search import DEFAULT_CANDIDATES, DEFAULT_MODE, MODES

if TYPE_CHECKING:
    from vdr.index import Index

CUTOFFS = (1, 5, 10)
METRICS = ("ndcg@1", "ndcg@5", "ndcg@10", "recall@1", "recall@5", "recall@10", "mrr@10")


@dataclass(frozen=True)
class Query:
    qid: str
    text: str
    type: str


PageKey = tuple[str, int]  # (doc_id = file stem, 1-based page)


def load_set(folder: Path) -> tuple[list[Query], dict[str, dict[PageKey, int]]]:
    """The queries and graded relevant pages of an evaluation set."""
    queries_file, qrels_file = folder / "queries.jsonl", folder / "qrels.tsv"
    for required in (queries_file, qrels_file, folder / "pdfs"):
        if not required.exists():
            raise VdrError(f"'{folder}' is not an evaluation set: '{required.name}' is missing")
    queries = []
    for number, line in enumerate(queries_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            queries.append(Query(qid=row["qid"], text=row["text"], type=row.get("type", "all")))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise VdrError(f"{queries_file.name} line {number} is not a query ({error})") from error
    qrels: dict[str, dict[PageKey, int]] = defaultdict(dict)
    for number, line in enumerate(qrels_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            qid, doc_id, page, grade = line.split("\t")
            qrels[qid][(doc_id, int(page))] = int(grade)
        except ValueError as error:
            raise VdrError(
                f"{qrels_file.name} line {number} is not 'qid doc page grade'"
            ) from error
    return queries, dict(qrels)


def evaluate(
    index: Index,
    set_dir: Path,
    k: int = 10,
    progress: bool = False,
    candidates: int | None = DEFAULT_CANDIDATES,
    mode: str = DEFAULT_MODE,
) -> dict:
    """Index set_dir/pdfs (a no-op when done already), run every query, score the rankings.
    An index that holds documents outside the set is refused before anything is written
    (check_set_index): the set would be written into it, and scored against its documents.

    candidates: the first stage's pool size per pooled vector kind (None: score every page).
    mode:       "hybrid", "late" or "bm25" (vdr.search.MODES).

    Returns summarise()'s means plus "per_query" metrics, "relevant_ranks" (each relevant
    page's rank, None when not in the top k), "search_seconds_per_query", "pages_per_query"
    (pages returned, at most k) and "skipped".
    """
    queries, qrels = load_set(set_dir)
    check_set_index(index, set_dir)
    report = index.add([set_dir / "pdfs"], progress=progress)
    started = time.perf_counter()
    rankings = index.search_many([q.text for q in queries], k=k, candidates=candidates, mode=mode)
    seconds = time.perf_counter() - started
    per_query, ranks = {}, {}
    for query, hits in zip(queries, rankings, strict=True):
        keys = [(Path(h.doc_path).stem, h.page) for h in hits]
        relevant = qrels.get(query.qid, {})
        per_query[query.qid] = query_metrics(keys, relevant)
        ranks[query.qid] = [keys.index(key) + 1 if key in keys else None for key in relevant]
    return {
        **summarise(per_query, {q.qid: q.type for q in queries}),
        "search_seconds_per_query": seconds / max(1, len(queries)),
        "pages_per_query": sum(map(len, rankings)) / max(1, len(queries)),
        "skipped": report.skipped,
        "per_query": per_query,
        "relevant_ranks": ranks,
    }


def check_set_index(index: Index, set_dir: Path) -> None:
    """VdrError when `index` holds (or has refused) a document whose content is not among
    set_dir/pdfs: only an index of the set alone, or an empty one, may be evaluated into."""
    in_set = {content_id(path) for path in discover([set_dir / "pdfs"])}
    known = {d.doc_id: d.doc_path for d in index.documents()}
    known.update((o.doc_id, o.path) for o in index.outcomes() if o.doc_id not in known)
    outside = sorted(path for doc_id, path in known.items() if doc_id not in in_set)
    if outside:
        raise VdrError(
            f"the index at '{index.path}' holds {len(outside)} document"
            f"{'s' if len(outside) > 1 else ''} that {'are' if len(outside) > 1 else 'is'} not "
            f"in the set (such as '{outside[0]}'), which eval would score and add the set to; "
            "leave out --index to evaluate in eval's own cache index, or name a new folder"
        )


def query_metrics(ranking: Sequence[PageKey], relevant: dict[PageKey, int]) -> dict[str, float]:
    """nDCG@k (linear gains = grades), Recall@k (share of relevant pages found), MRR@10.

    >>> m = query_metrics([("a", 2), ("a", 1)], {("a", 1): 2})
    >>> round(m["ndcg@5"], 4), m["recall@1"], m["recall@5"], m["mrr@10"]
    (0.6309, 0.0, 1.0, 0.5)
    """
    out = {}
    ideal = sorted(relevant.values(), reverse=True)
    for k in CUTOFFS:
        dcg = sum(
            relevant.get(key, 0) / math.log2(rank + 2) for rank, key in enumerate(ranking[:k])
        )
        idcg = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(ideal[:k]))
        out[f"ndcg@{k}"] = dcg / idcg if idcg else 0.0
        found = sum(1 for key in ranking[:k] if relevant.get(key, 0) > 0)
        out[f"recall@{k}"] = found / len(relevant) if relevant else 0.0
    first = next((r for r, key in enumerate(ranking[:10]) if relevant.get(key, 0) > 0), None)
    out["mrr@10"] = 1 / (first + 1) if first is not None else 0.0
    return out


def summarise(per_query: dict[str, dict[str, float]], types: dict[str, str]) -> dict:
    """Mean of each metric overall and per query type: {"n", metrics..., "by_type": {...}}."""

    def mean(qids: list[str]) -> dict[str, float]:
        return {
            "n": len(qids),
            **{m: sum(per_query[q][m] for q in qids) / len(qids) for m in METRICS},
        }

    by_type: dict[str, list[str]] = defaultdict(list)
    for qid in per_query:
        by_type[types[qid]].append(qid)
    return {**mean(list(per_query)), "by_type": {t: mean(q) for t, q in sorted(by_type.items())}}


@dataclass(frozen=True)
class SearchConfig:
    """One search configuration of `vdr eval --compare`, written "key=value[,key=value]":
    mode=hybrid|late|bm25, candidates=N|all (first-stage pool per pooled vector kind),
    rerank=auto|qdrant|vdr."""

    label: str
    mode: str = DEFAULT_MODE
    candidates: int | None = DEFAULT_CANDIDATES
    rerank: str | None = None  # None: the index's own setting

    @classmethod
    def parse(cls, text: str) -> SearchConfig:
        """A configuration from its text form; VdrError naming a setting that is not one.

        >>> SearchConfig.parse("mode=late,candidates=all")
        SearchConfig(label='mode=late,candidates=all', mode='late', candidates=None, rerank=None)
        """
        config = cls(label=text)
        for item in filter(None, text.split(",")):
            key, _, value = item.partition("=")
            if key == "candidates" and (value == "all" or (value.isdigit() and int(value) > 0)):
                config = replace(config, candidates=None if value == "all" else int(value))
            elif key == "rerank" and value in ("auto", "qdrant", "vdr"):
                config = replace(config, rerank=value)
            elif key == "mode" and value in MODES:
                config = replace(config, mode=value)
            else:
                raise VdrError(
                    f"'{item}' in '{text}' is not a search setting: use mode=hybrid|late|bm25, "
                    "candidates=N|all or rerank=auto|qdrant|vdr, joined by commas"
                )
        return config


def format_comparison(results: dict[str, dict]) -> str:
    """One row per configuration: every metric overall, nDCG@5 per query type, ms per query."""
    types = sorted({t for r in results.values() for t in r["by_type"]})
    width = max(16, *(len(label) + 2 for label in results))
    header = (
        f"{'configuration':<{width}}"
        + "".join(f"{m:>11}" for m in METRICS)
        + "".join(f"{t[:14] + ' @5':>18}" for t in types)
        + f"{'ms/query':>10}"
    )
    lines = [header]
    for label, r in results.items():
        lines.append(
            f"{label:<{width}}"
            + "".join(f"{r[m]:>11.3f}" for m in METRICS)
            + "".join(
                f"{r['by_type'].get(t, {}).get('ndcg@5', float('nan')):>18.3f}" for t in types
            )
            + f"{r['search_seconds_per_query'] * 1000:>10.0f}"
        )
    return "\n".join(lines)


def format_table(summary: dict) -> str:
    """The summary as a fixed-width table, one row overall and one per query type."""
    header = f"{'queries':<16}{'n':>5}" + "".join(f"{m:>11}" for m in METRICS)
    rows = [("all", summary), *summary["by_type"].items()]
    lines = [header] + [
        f"{name:<16}{s['n']:>5}" + "".join(f"{s[m]:>11.3f}" for m in METRICS) for name, s in rows
    ]
    return "\n".join(lines)
