"""The embedded store: Qdrant Edge, Qdrant's Rust engine running inside this process."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from qdrant_edge import (
    BinaryQuantizationConfig,
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeSparseVectorParams,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    HasIdCondition,
    HnswIndexConfig,
    MatchAny,
    MatchValue,
    Modifier,
    MultiVectorComparator,
    MultiVectorConfig,
    PayloadSchemaType,
    Point,
    Prefetch,
    QuantizationSearchParams,
    Query,
    QueryRequest,
    ScrollRequest,
    SearchParams,
    SparseVector,
    UpdateOperation,
    VectorStorageDatatype,
)

from vdr.storage import (
    DEFAULT_STORAGE,
    RESCORE_OVERSAMPLING,
    check_storage,
    datatype_name,
    storage_of,
)
from vdr.store.base import (
    COLS,
    FULL,
    HIT_FIELDS,
    KEYWORD_FIELDS,
    ROWS,
    SCROLL_PAGE,
    TEXT,
    Hit,
    PageRecord,
    Store,
    StoredPage,
    hit_of,
    payload_of,
    point_id_of,
    stored_page_of,
    text_vector_of,
    vectors_of,
)

# Written by EdgeShard.create: its presence tells an existing shard from an empty folder.
_CONFIG_FILE = "edge_config.json"
# Pages upserted between flushes of the segments. Until a flush the write-ahead log keeps every
# write (~0.65-1.1 MB a page of 1,030 x 128 vectors: a long run grew it by gigabytes); a flush
# costs ~0.1-0.4 s, under 1% of the time 256 pages take to encode even on a GPU, and bounds
# the log at ~256 pages' worth plus the engine's preallocated 32 MB files.
FLUSH_EVERY_PAGES = 256


class EdgeStore(Store):
    """Pages in a Qdrant Edge shard in `folder` (created on first use).

    One process may hold a shard at a time; the index around it takes a file lock first so a
    second process gets a clear message rather than an engine error.

    storage: how the multi-vectors are kept (vdr.storage.STORAGES); fixed when the shard
             is created, the shard's own configuration says which on later opens.
    """

    def __init__(self, folder: Path, dim: int, storage: str = DEFAULT_STORAGE) -> None:
        super().__init__()
        self.folder = folder
        if (folder / _CONFIG_FILE).exists():
            self.shard = EdgeShard.load(str(folder))
        else:
            folder.mkdir(parents=True, exist_ok=True)
            self.shard = EdgeShard.create(str(folder), _config(dim, check_storage(storage)))
            for field in KEYWORD_FIELDS:
                self.shard.update(
                    UpdateOperation.create_field_index(field, PayloadSchemaType.Keyword)
                )
        # Shards made by an older vdr have no "bm25" vector; search says so when asked.
        config = json.loads((folder / _CONFIG_FILE).read_text())
        self.has_text = TEXT in (config.get("sparse_vectors") or {})
        full = config["vectors"][FULL]
        self.storage = storage_of(full.get("datatype"), bool(full.get("quantization_config")))
        rescore = QuantizationSearchParams(rescore=True, oversampling=RESCORE_OVERSAMPLING)
        self._params = SearchParams(quantization=rescore) if self.storage == "binary" else None
        self._unflushed = 0  # pages upserted since the last flush

    def _upsert(self, records: Sequence[PageRecord]) -> None:
        points = [
            Point(id=point_id_of(r.page_id), vector=self._vectors(r), payload=payload_of(r))
            for r in records
        ]
        # Durable on return: the engine's write-ahead log survives a kill (flushing segments
        # on every write would cost ~0.1-0.4 s; every FLUSH_EVERY_PAGES pages and close() do).
        self.shard.update(UpdateOperation.upsert_points(points))
        self._unflushed += len(points)
        if self._unflushed >= FLUSH_EVERY_PAGES:
            # Segments on disk let the engine drop the log up to here; a kill mid-flush
            # replays the log, which still holds every write the flush had not finished.
            self.shard.flush()
            self._unflushed = 0

    def _vectors(self, record: PageRecord) -> dict[str, Any]:
        vectors: dict[str, Any] = dict(vectors_of(record.embedding))
        if self.has_text:
            vectors[TEXT] = SparseVector(*text_vector_of(record))
        return vectors

    def _search_text(
        self, indices: list[int], values: list[float], k: int, doc_ids: Sequence[str] | None
    ) -> list[Hit]:
        points = self.shard.query(
            QueryRequest(
                query=Query.Nearest(SparseVector(indices, values), using=TEXT),
                filter=_doc_filter(doc_ids) if doc_ids else None,
                limit=k,
                with_payload=HIT_FIELDS,
                with_vector=False,
            )
        )
        return [hit_of(p.payload, p.score) for p in points]

    def _delete_documents(self, doc_ids: Sequence[str]) -> None:
        self.shard.update(UpdateOperation.delete_points_by_filter(_doc_filter(doc_ids)))

    def _set_doc_path(self, doc_id: str, doc_path: str) -> None:
        self.shard.update(
            UpdateOperation.set_payload_by_filter(_doc_filter([doc_id]), {"doc_path": doc_path})
        )

    def _scroll(
        self, fields: list[str], with_full: bool
    ) -> Iterator[tuple[dict[str, Any], list[list[float]] | None]]:
        offset = None
        while True:
            records, offset = self.shard.scroll(
                ScrollRequest(
                    limit=SCROLL_PAGE,
                    offset=offset,
                    with_payload=fields,
                    with_vector=[FULL] if with_full else False,
                )
            )
            yield from ((r.payload, r.vector[FULL] if with_full else None) for r in records)
            if offset is None:
                return

    def _search(
        self,
        query: list[list[float]],
        k: int,
        candidates: int | None,
        doc_ids: Sequence[str] | None,
        picked: Sequence[str] = (),
    ) -> list[Hit]:
        where = _doc_filter(doc_ids) if doc_ids else None
        prefetches = [
            Prefetch(
                query=Query.Nearest(query, using=name),
                limit=candidates,
                filter=where,
                params=self._params,
            )
            for name in ((ROWS, COLS) if candidates else ())
        ]
        if picked:
            # The picked pages by way of a cheap prefetch (their rows), so that the final
            # query reranks them with the rest; the filter passes over deleted ids.
            ids = HasIdCondition({point_id_of(p) for p in picked})
            prefetches.append(
                Prefetch(
                    query=Query.Nearest(query, using=ROWS),
                    limit=len(picked),
                    filter=Filter(must=[ids, *(where.must if where else [])]),
                    params=self._params,
                )
            )
        points = self.shard.query(
            QueryRequest(
                prefetches=prefetches or None,
                query=Query.Nearest(query, using=FULL),
                filter=where,
                limit=k,
                params=self._params,
                with_payload=HIT_FIELDS,
                with_vector=False,
            )
        )
        return [hit_of(p.payload, p.score) for p in points]

    def _nearest(
        self, query: list[list[float]], using: str, limit: int, doc_ids: Sequence[str] | None
    ) -> list[str]:
        points = self.shard.query(
            QueryRequest(
                query=Query.Nearest(query, using=using),
                filter=_doc_filter(doc_ids) if doc_ids else None,
                limit=limit,
                params=self._params,
                with_payload=["page_id"],
                with_vector=False,
            )
        )
        return [p.payload["page_id"] for p in points]

    def _hit_payloads(self, page_ids: Sequence[str]) -> list[dict[str, Any]]:
        records = self.shard.retrieve([point_id_of(p) for p in page_ids], HIT_FIELDS, False)
        return [r.payload for r in records]

    def _fetch_page(self, page_id: str) -> StoredPage | None:
        records = self.shard.retrieve([point_id_of(page_id)], True, [FULL])
        if not records:
            return None
        return stored_page_of(records[0].payload, records[0].vector[FULL])

    def count(self, doc_ids: Sequence[str] | None = None) -> int:
        where = _doc_filter(doc_ids) if doc_ids else None
        return int(self.shard.count(CountRequest(exact=True, filter=where)))

    def optimize(self) -> bool:
        # Qdrant Edge has no background optimizer: segments stay plain (every first-stage query
        # a scan) until asked to merge them and build their HNSW graphs. It leaves a segment
        # below its indexing threshold (~10 MB of vectors) plain: scanning one costs little.
        return bool(self.shard.optimize())

    def close(self) -> None:
        self.shard.close()


def _config(dim: int, storage: str) -> EdgeConfig:
    maxsim = MultiVectorConfig(comparator=MultiVectorComparator.MaxSim)
    datatype = {
        "float32": VectorStorageDatatype.Float32,
        "float16": VectorStorageDatatype.Float16,
        "turbo8": VectorStorageDatatype.Turbo8,
    }[datatype_name(storage)]
    binary = BinaryQuantizationConfig(always_ram=True) if storage == "binary" else None

    def params(hnsw: HnswIndexConfig | None = None) -> EdgeVectorParams:
        return EdgeVectorParams(
            size=dim,
            distance=Distance.Dot,
            multivector_config=maxsim,
            datatype=datatype,
            quantization_config=binary,
            hnsw_config=hnsw,
        )

    return EdgeConfig(
        vectors={
            # The full multi-vector is only ever reranked exactly: no HNSW graph (m=0).
            FULL: params(HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000)),
            ROWS: params(),
            COLS: params(),
        },
        sparse_vectors={TEXT: EdgeSparseVectorParams(modifier=Modifier.Idf)},
    )


def _doc_filter(doc_ids: Sequence[str]) -> Filter:
    match = MatchValue(doc_ids[0]) if len(doc_ids) == 1 else MatchAny(list(doc_ids))
    return Filter(must=[FieldCondition(key="doc_id", match=match)])
