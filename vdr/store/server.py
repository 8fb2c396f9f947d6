"""A Qdrant server or cluster through qdrant-client: the same schema as the embedded store.

Sharding and replication are the server's business; this class only speaks the schema.
qdrant-client's own ":memory:" mode stands in for a server in tests.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from qdrant_client import QdrantClient, models

from vdr.errors import VdrError
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

DEFAULT_COLLECTION = "vdr"


class ServerStore(Store):
    """Pages in collection `collection` of the Qdrant at `url` (":memory:" for in-process)."""

    optimizes_itself = True

    def __init__(
        self,
        url: str,
        dim: int,
        collection: str = DEFAULT_COLLECTION,
        api_key: str | None = None,
        storage: str = DEFAULT_STORAGE,
    ) -> None:
        super().__init__()
        self.collection = collection
        try:
            if url == ":memory:":
                self.client = QdrantClient(location=":memory:")
            else:
                self.client = QdrantClient(url=url, api_key=api_key, timeout=60)
            exists = self.client.collection_exists(collection)
        except Exception as error:  # connection errors come in many types
            raise VdrError(f"cannot reach Qdrant at {url} ({error})") from error
        if not exists:
            self._create(dim, check_storage(storage))
        params = self.client.get_collection(collection).config.params
        # Collections made by an older vdr have no "bm25" vector; search says so when asked.
        self.has_text = TEXT in (params.sparse_vectors or {})
        full = params.vectors[FULL]  # type: ignore[index]
        self.storage = storage_of(
            full.datatype and full.datatype.value, full.quantization_config is not None
        )
        self._params = (
            models.SearchParams(
                quantization=models.QuantizationSearchParams(
                    rescore=True, oversampling=RESCORE_OVERSAMPLING
                )
            )
            if self.storage == "binary"
            else None
        )

    def _create(self, dim: int, storage: str) -> None:
        maxsim = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
        binary = (
            models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
            if storage == "binary"
            else None
        )

        def params(hnsw: models.HnswConfigDiff | None = None) -> models.VectorParams:
            return models.VectorParams(
                size=dim,
                distance=models.Distance.DOT,
                multivector_config=maxsim,
                hnsw_config=hnsw,
                datatype=models.Datatype(datatype_name(storage)),
                quantization_config=binary,
            )

        self.client.create_collection(
            self.collection,
            vectors_config={
                FULL: params(models.HnswConfigDiff(m=0)),  # reranked exactly, never searched
                ROWS: params(),
                COLS: params(),
            },
            sparse_vectors_config={TEXT: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        with warnings.catch_warnings():  # local mode warns that it ignores payload indexes
            warnings.simplefilter("ignore")
            for field in KEYWORD_FIELDS:
                self.client.create_payload_index(
                    self.collection, field, field_schema=models.PayloadSchemaType.KEYWORD
                )

    def _upsert(self, records: Sequence[PageRecord]) -> None:
        points = [
            models.PointStruct(
                id=point_id_of(r.page_id), vector=self._vectors(r), payload=payload_of(r)
            )
            for r in records
        ]
        self.client.upsert(self.collection, points=points, wait=True)

    def _vectors(self, record: PageRecord) -> dict[str, Any]:
        vectors: dict[str, Any] = dict(vectors_of(record.embedding))
        if self.has_text:
            indices, values = text_vector_of(record)
            vectors[TEXT] = models.SparseVector(indices=indices, values=values)
        return vectors

    def _search_text(
        self, indices: list[int], values: list[float], k: int, doc_ids: Sequence[str] | None
    ) -> list[Hit]:
        response = self.client.query_points(
            self.collection,
            query=models.SparseVector(indices=indices, values=values),
            using=TEXT,
            query_filter=_doc_filter(doc_ids) if doc_ids else None,
            limit=k,
            with_payload=HIT_FIELDS,
            with_vectors=False,
        )
        return [hit_of(p.payload or {}, p.score) for p in response.points]

    def _delete_documents(self, doc_ids: Sequence[str]) -> None:
        self.client.delete(
            self.collection,
            points_selector=models.FilterSelector(filter=_doc_filter(doc_ids)),
            wait=True,
        )

    def _set_doc_path(self, doc_id: str, doc_path: str) -> None:
        self.client.set_payload(
            self.collection,
            payload={"doc_path": doc_path},
            points=models.FilterSelector(filter=_doc_filter([doc_id])),
            wait=True,
        )

    def _scroll(
        self, fields: list[str], with_full: bool
    ) -> Iterator[tuple[dict[str, Any], list[list[float]] | None]]:
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection,
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=fields,
                with_vectors=[FULL] if with_full else False,
            )
            for r in records:
                full = r.vector[FULL] if with_full and isinstance(r.vector, dict) else None
                yield r.payload or {}, full  # type: ignore[misc]
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
        prefetch = [
            models.Prefetch(
                query=query, using=name, limit=candidates, filter=where, params=self._params
            )
            for name in ((ROWS, COLS) if candidates else ())
        ]
        if picked:
            # As in the embedded store: the picked pages through a cheap prefetch on their rows.
            ids = models.HasIdCondition(has_id=[point_id_of(p) for p in picked])
            prefetch.append(
                models.Prefetch(
                    query=query,
                    using=ROWS,
                    limit=len(picked),
                    filter=models.Filter(must=[ids, *(where.must if where else [])]),
                    params=self._params,
                )
            )
        response = self.client.query_points(
            self.collection,
            prefetch=prefetch or None,
            query=query,
            using=FULL,
            query_filter=where,
            search_params=self._params,
            limit=k,
            with_payload=HIT_FIELDS,
            with_vectors=False,
        )
        return [hit_of(p.payload or {}, p.score) for p in response.points]

    def _nearest(
        self, query: list[list[float]], using: str, limit: int, doc_ids: Sequence[str] | None
    ) -> list[str]:
        response = self.client.query_points(
            self.collection,
            query=query,
            using=using,
            query_filter=_doc_filter(doc_ids) if doc_ids else None,
            search_params=self._params,
            limit=limit,
            with_payload=["page_id"],
            with_vectors=False,
        )
        return [(p.payload or {})["page_id"] for p in response.points]

    def _hit_payloads(self, page_ids: Sequence[str]) -> list[dict[str, Any]]:
        ids = [point_id_of(p) for p in page_ids]
        records = self.client.retrieve(self.collection, ids, HIT_FIELDS, with_vectors=False)
        return [r.payload or {} for r in records]

    def _fetch_page(self, page_id: str) -> StoredPage | None:
        records = self.client.retrieve(
            self.collection, ids=[point_id_of(page_id)], with_payload=True, with_vectors=[FULL]
        )
        if not records:
            return None
        vector = records[0].vector
        assert isinstance(vector, dict)
        return stored_page_of(records[0].payload or {}, vector[FULL])  # type: ignore[arg-type]

    def count(self, doc_ids: Sequence[str] | None = None) -> int:
        where = _doc_filter(doc_ids) if doc_ids else None
        return int(self.client.count(self.collection, count_filter=where, exact=True).count)

    def optimize(self) -> bool:
        """Nothing to do: a Qdrant server's own optimizer builds HNSW graphs in the background."""
        return False

    def close(self) -> None:
        self.client.close()


def _doc_filter(doc_ids: Sequence[str]) -> models.Filter:
    match = (
        models.MatchValue(value=doc_ids[0])
        if len(doc_ids) == 1
        else models.MatchAny(any=list(doc_ids))
    )
    return models.Filter(must=[models.FieldCondition(key="doc_id", match=match)])
