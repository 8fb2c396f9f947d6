"""The Python API: an index folder holding a store, page images and the encoder's identity.

The CLI and the HTTP server are thin layers over this class; README.md shows it in use (that
example runs in the test suite).

An index folder holds:
    vdr.json   which encoder (and settings) built it, where its vectors live, and how many
               pages were written since the store was last optimized
    qdrant/    the Qdrant Edge shard (absent when a Qdrant server holds the vectors)
    tokens/    the token-level first stage (vdr.token_index), built by optimize() once the
               index holds TOKEN_INDEX_MIN_PAGES
    pages/     one JPEG per page
    files.json what became of every file examined: indexed, partly, or refused and why
               (vdr.ledger)
    uploads/   files uploaded through `vdr serve`, each as <doc id>-<its name>
    lock       held by the process that has the index open
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from PIL import Image

from vdr.encoders import DEFAULT_MODEL, Encoder, QueryEmbedding, canonical_name, load_encoder
from vdr.encoders.base import resolve_device
from vdr.errors import IndexLocked, ModelMismatch, NotFound, UnknownId, VdrError
from vdr.figures import DEFAULT_FIGURES, FIGURES
from vdr.heatmap import SimilarityMaps, group_word_pieces, map_tokens, similarity_maps
from vdr.indexer.pipeline import IndexReport, index_paths
from vdr.ledger import FileOutcome, Ledger
from vdr.page_images import PageImages
from vdr.search import DEFAULT_CANDIDATES, DEFAULT_MODE, MATCH_THRESHOLDS, search_many
from vdr.storage import DEFAULT_STORAGE, check_storage
from vdr.store import Hit, IndexedDocument, StoredPage, open_store
from vdr.store.resident import ResidentVectors
from vdr.token_index import TokenIndex, TokenIndexInfo, build_token_index, remove_token_index

MANIFEST = "vdr.json"
UPLOADS_DIR = "uploads"
_UPLOAD_NAME = re.compile(r"^[0-9a-f]{16}-")
# Query encodings kept per open index (a few KB each).
QUERY_CACHE_SIZE = 256
FORMAT_VERSION = 1
# Share of free GPU memory the resident page vectors may take before auto falls back to Qdrant.
GPU_RESIDENT_SHARE = 0.5
# When an indexing run optimizes the embedded store (Index.optimize_due). Pages written since
# the last optimize sit in plain segments, which every first-stage query scans: 231 ms a query
# at 10,000 ColPali-sized pages against 23 ms through the HNSW graphs (BENCHMARKS.md, first
# stage of 100), so ~23 ms per 1,000 plain pages, what the whole HNSW first stage costs.
# Optimizing rebuilds the graphs of the whole index, not only of the new pages (~11 s at 1,000
# pages, ~255 s at 10,000), so it waits until the index holds OPTIMIZE_MIN_PAGES and the pages
# written since make up OPTIMIZE_SHARE of it: small indexes never pay for it, and a large one
# growing run by run (by a third between optimizes) spends at most ~4x its last rebuild in all
# (1 + 3/4 + (3/4)^2 + ...) while its first stage scans under a quarter of it.
OPTIMIZE_MIN_PAGES = 1000
OPTIMIZE_SHARE = 0.25
# optimize() builds the token-level first stage from this many pages on. Below it the pooled
# first stage passes a fifth or more of the index to the rerank (200 pages a kind), which
# keeps Recall@10 at 0.96 or more (1,000 generated pages, BENCHMARKS.md); above it the
# pooled stage falls behind (0.70 with 400 of 10,000) and the token stage keeps 0.99.
TOKEN_INDEX_MIN_PAGES = OPTIMIZE_MIN_PAGES
TOKEN_INDEX_DIR = "tokens"


@dataclass(frozen=True)
class OptimizeReport:
    """What Index.optimize did: changed is False when the store was already optimal (or
    builds its graphs itself, as a Qdrant server does)."""

    changed: bool
    pages: int  # in the index
    written: int  # pages written since the previous optimize
    seconds: float
    token_index: TokenIndexInfo | None  # the token first stage built, if the index is large


class Index:
    """An index folder, open for reading and writing by this process alone.

    path:       the index folder (created if missing)
    model:      encoder name or checkpoint directory; None takes the one the index was built
                with (or the default encoder for a new index). Another model than the one
                recorded is refused.
    qdrant_url: keep the vectors in this Qdrant server instead of the embedded store; an
                index created with a URL remembers it. qdrant_api_key: that server's key.
    device, dtype, batch_size: how the encoder computes (see vdr.encoders.load_encoder).
    pool_factor: keep ~1/pool_factor of each page's vectors (token pooling); fixed when the
                index is created (default 1, no pooling), another value is refused later.
    storage:    how the vectors are kept on disk: "float32", "float16", "int8" or "binary"
                (vdr.storage); fixed when the index is created (default float32),
                another value is refused later.
    figures:    how each page's figures are described, for encoders that read words
                (vdr.figures.FIGURES): "none", "kind" (its kind and colours, as words spread
                over the figure) or "kind+text" (and its caption and labels); fixed when the
                index is created (default "kind"; indexes made before figures were
                described: "none"), another value is refused later.
    create:     make a new index when `path` holds none (otherwise NotFound).
    rerank:     who reranks the first stage's candidates exactly: "qdrant" (Qdrant's own, next
                to its storage), "vdr" (our MaxSim kernels on every page's vectors kept in
                `device` memory, read in on the first search), or "auto" (see choose_rerank;
                where that picks Qdrant's in an int8 index, a current token first stage
                reranks its own candidates from its own int8 copy of the vectors instead).
    """

    def __init__(
        self,
        path: str | Path,
        model: str | None = None,
        qdrant_url: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 0,
        pool_factor: int | None = None,
        qdrant_api_key: str | None = None,
        create: bool = True,
        rerank: str = "auto",
        storage: str | None = None,
        figures: str | None = None,
    ) -> None:
        _check_rerank(rerank)
        self.path = Path(path).expanduser().absolute()
        if not create and not (self.path / MANIFEST).exists():
            raise NotFound(f"there is no index at '{self.path}'; build one with `vdr index`")
        self.path.mkdir(parents=True, exist_ok=True)
        self._compute = (device, dtype, batch_size)
        self.rerank = rerank
        self._rerank_ready = False
        self._rerank_lock = threading.Lock()
        self._encoder: Encoder | None = None
        self._queries: OrderedDict[str, QueryEmbedding] = OrderedDict()
        self._queries_lock = threading.Lock()
        self._lock = _lock(self.path)
        try:
            manifest = self._manifest(model, qdrant_url, pool_factor, storage, figures)
            self._manifest_fields = manifest
            self.model: str = manifest["model"]
            self.pool_factor: int = manifest["pool_factor"]
            self.storage: str = manifest["storage"]
            self.figures: str = manifest["figures"]
            self.qdrant_url: str | None = manifest["qdrant_url"]
            self._dim: int = manifest["dim"]
            self.store = open_store(
                self.path / "qdrant",
                manifest["dim"],
                self.qdrant_url,
                qdrant_api_key,
                self.storage,
            )
            self.images = PageImages(self.path / "pages")
            self.ledger = Ledger(self.path)
            self._tokens = TokenIndex.open(self.path / TOKEN_INDEX_DIR)
        except BaseException:
            self._lock.close()
            raise

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self.store.close()
        self._lock.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def encoder(self) -> Encoder:
        """The index's encoder, loaded on first use (listing and page views need none)."""
        if self._encoder is None:
            self._encoder = load_encoder(self.model, *self._compute)
        return self._encoder

    # -- writing ----------------------------------------------------------------------------

    def add(
        self,
        paths: Sequence[str | Path],
        *,
        progress: bool = False,
        passwords: Sequence[str] = (),
    ) -> IndexReport:
        """Index the documents (PDFs, page images) under `paths`; changed files are
        re-encoded, removed ones dropped. passwords: tried on encrypted PDFs.

        Does not optimize the store: the caller asks optimize_due() and decides, since an
        optimize can take minutes (`vdr index` does; `vdr serve` would hold up an upload)."""
        # The write count goes up before any page is written, so that a run killed midway
        # still leaves the token index (built at the old count) marked stale; a run that
        # wrote nothing puts it back.
        writes = self.writes
        folders = [Path(p).expanduser().absolute() for p in paths]
        # vdr.json "roots": the folders given here, so display_path() can show a document's
        # path relative to the one the user named (the index's own uploads are not roots).
        roots = [str(f) for f in folders if f.is_dir() and not f.is_relative_to(self.path)]
        self._save_manifest(
            writes=writes + 1, roots=[*self.roots, *(r for r in roots if r not in self.roots)]
        )
        report = index_paths(
            [Path(p) for p in paths],
            lambda: self.encoder,
            self.store,
            self.images,
            self.ledger,
            pool_factor=self.pool_factor,
            figures=self.figures,
            progress=progress,
            passwords=passwords,
        )
        if report.pages_encoded:
            # Counted once the run returns: a killed run's pages go uncounted, but for those
            # of the document it left half written, which the re-run writes (and counts) again.
            self._save_manifest(
                pages_since_optimize=self.pages_since_optimize + report.pages_encoded
            )
        else:
            self._save_manifest(writes=writes)
        return report

    @property
    def roots(self) -> list[str]:
        """The folders given to add() so far, absolute (vdr.json "roots"; none in an index
        made before vdr kept them)."""
        return list(self._manifest_fields.get("roots", []))

    def display_path(self, doc_path: str, *, absolute: bool = False) -> str:
        """How a document's stored path (absolute) is shown to a person or a client: relative
        to the outermost folder given to add() that holds it, else its file name (a file given
        alone, or an index made before vdr kept its roots). An upload (uploads/<doc id>-<name>
        in the index folder) is shown as its original name, whatever `absolute` says.

        absolute: the stored path itself (for uploads: still the name)."""
        path = Path(doc_path)
        if path.parent == self.path / UPLOADS_DIR:
            return _UPLOAD_NAME.sub("", path.name)
        if absolute:
            return doc_path
        for root in sorted(self.roots, key=len):
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return path.name

    @property
    def writes(self) -> int:
        """Indexing runs that may have written pages (a token index built at another count
        does not know every page)."""
        return int(self._manifest_fields.get("writes", 0))

    @property
    def token_stage(self) -> str:
        """The token first stage: "current" (searches use it alone), "stale" (indexing runs
        since it was built: searches run the pooled stage beside it), "none" (not built: under
        TOKEN_INDEX_MIN_PAGES, or not optimized since), or "broken" (files lost or cut short,
        as a machine crash can leave them, or missing from one an older vdr wrote: searches
        use the pooled stage). optimize() makes a
        stale, missing or broken one current."""
        if self._tokens is not None:
            return "current" if self._tokens.info.writes == self.writes else "stale"
        return "broken" if (self.path / TOKEN_INDEX_DIR).exists() else "none"

    @property
    def pages_since_optimize(self) -> int:
        """Pages written since the store was last optimized; every page of an index made
        before vdr kept count."""
        written = self._manifest_fields.get("pages_since_optimize")
        return self.store.count() if written is None else int(written)

    def optimize_due(self) -> bool:
        """Whether the index has changed enough since its last optimize for one to pay
        (OPTIMIZE_MIN_PAGES, OPTIMIZE_SHARE). A Qdrant server builds its own graphs, but the
        token first stage (from TOKEN_INDEX_MIN_PAGES) is vdr's to build on either."""
        pages = self.store.count()
        needed = max(OPTIMIZE_MIN_PAGES, OPTIMIZE_SHARE * pages)
        return pages >= OPTIMIZE_MIN_PAGES and self.pages_since_optimize >= needed

    def optimize(self) -> OptimizeReport:
        """Merge the store's segments and build its HNSW graphs, then (from
        TOKEN_INDEX_MIN_PAGES on) rebuild the token first stage from every page's vectors, now,
        whether due or not. Blocks until done: on 2 cores the graphs take ~11 s at 1,000
        ColPali-sized pages and ~255 s at 10,000, the token index about as long again
        (BENCHMARKS.md, "The token first stage in the store")."""
        written = self.pages_since_optimize
        started = time.perf_counter()
        changed = self.store.optimize()
        pages = self.store.count()
        folder = self.path / TOKEN_INDEX_DIR
        self._tokens = None
        built = None
        if pages >= TOKEN_INDEX_MIN_PAGES:
            built = build_token_index(
                self.store.page_vectors(), self.store.vector_count(), folder, self.writes
            )
            self._tokens = TokenIndex.open(folder)
        else:
            remove_token_index(folder)
        seconds = time.perf_counter() - started
        self._save_manifest(pages_since_optimize=0)
        return OptimizeReport(changed, pages, written, seconds, built)

    def remove(self, doc_ids: Sequence[str]) -> None:
        """Forget these documents (refused files' outcomes too): store first, then images, so
        no point outlives its image. UnknownId for an id the index does not know, and then
        nothing is removed."""
        self.require_documents(doc_ids, refused=True)
        self.store.delete_documents(list(doc_ids))
        self.images.delete_documents(doc_ids)
        self.ledger.forget(doc_ids)

    # -- reading ----------------------------------------------------------------------------

    def documents(self) -> list[IndexedDocument]:
        return self.store.documents()

    def outcomes(self) -> list[FileOutcome]:
        """What became of every file the index has examined (refused ones too), by path."""
        return self.ledger.outcomes()

    def outcome(self, doc_id: str) -> FileOutcome | None:
        return self.ledger.get(doc_id)

    def require_documents(self, doc_ids: Sequence[str], refused: bool = False) -> None:
        """UnknownId naming the first of `doc_ids` with no page in the store (refused: or no
        refusal in the ledger either)."""
        for doc_id in doc_ids:
            if not self.store.count([doc_id]) and not (refused and self.outcome(doc_id)):
                raise UnknownId("document", doc_id)

    def search(
        self,
        query: str,
        k: int = 10,
        doc_ids: Sequence[str] | None = None,
        candidates: int | None = DEFAULT_CANDIDATES,
        evidence: bool = True,
        mode: str = DEFAULT_MODE,
    ) -> list[Hit]:
        """Top k pages for `query`, best first, each with its evidence unless asked not to
        (see vdr.search.search_many; mode: "hybrid", "late" or "bm25")."""
        return self.search_many([query], k, doc_ids, candidates, evidence, mode)[0]

    def search_many(
        self,
        queries: Sequence[str],
        k: int = 10,
        doc_ids: Sequence[str] | None = None,
        candidates: int | None = DEFAULT_CANDIDATES,
        evidence: bool = False,
        mode: str = DEFAULT_MODE,
    ) -> list[list[Hit]]:
        if doc_ids:  # an unknown id is a mistake to name, not a search without results
            self.require_documents(doc_ids)
        self._prepare_rerank()
        tokens = self._tokens
        return search_many(
            self.embed_queries,
            self.store,
            queries,
            k,
            doc_ids,
            candidates,
            evidence,
            mode,
            tokens,
            tokens_fresh=self.token_stage == "current",
            # Only over bytes: the token index's vectors are int8, and a float store's own
            # rerank keeps the scores its storage promises.
            tokens_rerank=self.rerank == "auto"
            and self.store.resident is None
            and self.storage == "int8",
            # Pooled vectors no longer keep a word's pieces in order (vdr.search.match_score).
            match_threshold=MATCH_THRESHOLDS.get(self.model) if self.pool_factor == 1 else None,
        )

    def announce_server(self, url: str) -> None:
        """Record that `vdr serve` at `url` holds this index, so that another vdr command on it
        says where to go rather than only that it is busy."""
        _write_holder(self._lock, url)

    def use_rerank(self, rerank: str) -> None:
        """Switch who reranks ("auto", "qdrant" or "vdr", as in the constructor) from the next
        search on; resident vectors held for the old setting are let go."""
        _check_rerank(rerank)
        with self._rerank_lock:
            self.rerank, self._rerank_ready = rerank, False
            self.store.resident = None

    def page(self, page_id: str) -> StoredPage:
        """A page's record with its full multi-vector."""
        page = self.store.get_page(page_id)
        if page is None:
            raise UnknownId("page", page_id)
        return page

    def page_image(self, page_id: str) -> Image.Image:
        """The page's image; UnknownId for a page the store does not hold, NotFound for a
        stored page whose image is gone (`vdr doctor --repair` renders it again)."""
        try:
            return self.images.load(page_id)
        except NotFound:
            if self.store.get_page(page_id) is None:
                raise UnknownId("page", page_id) from None
            raise

    def embed_queries(self, queries: Sequence[str]) -> list[QueryEmbedding]:
        """The encoder's QueryEmbeddings, remembered for the last QUERY_CACHE_SIZE texts: a
        search, its word labels and every heatmap of its results reuse one encoding."""
        with self._queries_lock:
            found = {q: self._queries[q] for q in queries if q in self._queries}
        missing = list(dict.fromkeys(q for q in queries if q not in found))
        if missing:
            found.update(zip(missing, self.encoder.encode_queries(missing), strict=True))
        with self._queries_lock:
            for query in queries:
                self._queries[query] = found[query]
                self._queries.move_to_end(query)
            while len(self._queries) > QUERY_CACHE_SIZE:
                self._queries.popitem(last=False)
        return [found[q] for q in queries]

    def query_words(self, query: str) -> tuple[str, ...]:
        """The query's words as heatmaps label them (word pieces joined, no special tokens)."""
        (embedding,) = self.embed_queries([query])
        tokens = [
            t for t, keep in zip(embedding.tokens, map_tokens(embedding), strict=True) if keep
        ]
        return group_word_pieces(tokens)[0]

    def similarity(self, query: str, page_id: str) -> SimilarityMaps:
        """Per-token maps [tokens, rows, cols] of `query` over the page's patch grid."""
        page = self.page(page_id)  # an unknown page fails before a model is loaded
        return similarity_maps(self.embed_queries([query])[0], page.embedding)

    # -- internals --------------------------------------------------------------------------

    def _resident_bytes(self) -> int:
        """Memory every page's full multi-vector takes as float32 (reads every payload)."""
        return self.store.vector_count() * self._dim * 4

    def _prepare_rerank(self) -> None:
        """On the first search, read the page vectors into memory if our kernels rerank."""
        with self._rerank_lock:
            if self._rerank_ready:
                return
            self._rerank_ready = True
            device = torch.device(resolve_device(self._compute[0]))
            if choose_rerank(self.rerank, device, self._resident_bytes) == "vdr":
                self.store.keep_resident(ResidentVectors(device))

    def _manifest(
        self,
        model: str | None,
        qdrant_url: str | None,
        pool_factor: int | None,
        storage: str | None,
        figures: str | None,
    ) -> dict[str, Any]:
        file = self.path / MANIFEST
        if file.exists():
            try:
                manifest = json.loads(file.read_text())
            except json.JSONDecodeError as error:
                raise VdrError(f"'{file}' is damaged ({error})") from error
            if model and canonical_name(model) != manifest["model"]:
                raise ModelMismatch(
                    f"the index at '{self.path}' was built with model '{manifest['model']}', "
                    f"not '{model}'; use another --index folder for another model"
                )
            if qdrant_url and qdrant_url != manifest["qdrant_url"]:
                raise VdrError(
                    f"the index at '{self.path}' keeps its vectors "
                    f"{'in ' + manifest['qdrant_url'] if manifest['qdrant_url'] else 'embedded'}, "
                    f"not in {qdrant_url}"
                )
            manifest.setdefault("pool_factor", 1)  # indexes made before pooling existed
            if pool_factor is not None and pool_factor != manifest["pool_factor"]:
                raise VdrError(
                    f"the index at '{self.path}' pools vectors by {manifest['pool_factor']}, "
                    f"not {pool_factor}; use another --index folder for another pool factor"
                )
            manifest.setdefault("storage", DEFAULT_STORAGE)  # indexes made before the option
            if storage is not None and storage != manifest["storage"]:
                raise VdrError(
                    f"the index at '{self.path}' stores its vectors as {manifest['storage']}, "
                    f"not {storage}; use another --index folder for another storage"
                )
            manifest.setdefault("figures", "none")  # made before figures were described
            if figures is not None and figures != manifest["figures"]:
                raise VdrError(
                    f"the index at '{self.path}' describes figures as '{manifest['figures']}', "
                    f"not '{figures}'; use another --index folder for another description"
                )
            return manifest
        if pool_factor is not None and pool_factor < 1:
            raise VdrError(f"the pool factor must be at least 1, not {pool_factor}")
        if figures is not None and figures not in FIGURES:
            raise VdrError(f"figures are described as {', '.join(FIGURES)}, not '{figures}'")
        check_storage(storage or DEFAULT_STORAGE)
        encoder = self._encoder = load_encoder(
            canonical_name(model or DEFAULT_MODEL), *self._compute
        )
        manifest = {
            "format": FORMAT_VERSION,
            "model": encoder.name,
            "settings": encoder.settings(),
            "dim": encoder.dim,
            "qdrant_url": qdrant_url,
            "pool_factor": pool_factor or 1,
            "storage": storage or DEFAULT_STORAGE,
            "figures": DEFAULT_FIGURES if figures is None else figures,
            "pages_since_optimize": 0,
        }
        _write_manifest(file, manifest)
        return manifest

    def _save_manifest(self, **changes: Any) -> None:
        """Record these fields in vdr.json (atomically: a crash leaves the old or the new)."""
        self._manifest_fields = {**self._manifest_fields, **changes}
        _write_manifest(self.path / MANIFEST, self._manifest_fields)


def _write_manifest(file: Path, manifest: dict[str, Any]) -> None:
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, file)


def _check_rerank(rerank: str) -> None:
    if rerank not in ("auto", "qdrant", "vdr"):
        raise VdrError(f"rerank must be auto, qdrant or vdr, not {rerank!r}")


def choose_rerank(rerank: str, device: torch.device, resident_bytes: Callable[[], int]) -> str:
    """ "qdrant" or "vdr" for an Index's `rerank` setting on `device`.

    auto: our Triton kernel on a CUDA device when every page's vectors fit in
    GPU_RESIDENT_SHARE of its free memory; Qdrant's own rerank on a CPU, where it measured
    faster for one-off searches (benches/rerank.py: reading the vectors into memory first costs
    ~7 ms a page) and costs no memory beyond Qdrant's. "vdr" on a GPU too small is refused.
    Where auto picks "qdrant" in an int8 index, a current token first stage reranks instead
    (Index.search_many): it holds every page's vectors already, in int8 too, so a search reads
    them once, not twice.
    """
    if rerank == "qdrant" or (rerank == "auto" and device.type != "cuda"):
        return "qdrant"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        needed = resident_bytes()
        if needed > GPU_RESIDENT_SHARE * free:
            if rerank == "auto":
                return "qdrant"
            raise VdrError(
                f"the page vectors need {needed / 2**30:.1f} GiB of GPU memory and "
                f"{device} has {free / 2**30:.1f} GiB free; use --rerank qdrant"
            )
    return "vdr"


def _lock(folder: Path) -> TextIO:
    """An exclusive lock on the index folder, held until the returned file is closed;
    IndexLocked naming the holder (its pid, and its URL when it is `vdr serve`) otherwise."""
    handle = (folder / "lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid, _, url = handle.read().strip().partition(" ")
        handle.close()
        if url:
            raise IndexLocked(
                f"the index at '{folder}' is served by `vdr serve` at {url} (pid {pid}): "
                f"search it there (POST {url}/search, or the web page), add or remove PDFs "
                f"with {url}/documents, or stop the server to use it from here",
                server_url=url,
            ) from None
        raise IndexLocked(
            f"the index at '{folder}' is in use by another vdr process (pid {pid or 'unknown'}); "
            "wait for it to finish"
        ) from None
    _write_holder(handle)
    return handle


def _write_holder(handle: TextIO, url: str = "") -> None:
    """Say in the lock file who holds the index: this pid, and the URL it serves, if any."""
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} {url}".strip())
    handle.flush()
