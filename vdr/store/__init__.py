"""Where pages live: Qdrant Edge embedded in the process, or a Qdrant server (same schema)."""

from __future__ import annotations

from pathlib import Path

from vdr.storage import DEFAULT_STORAGE
from vdr.store.base import Hit, IndexedDocument, PageRecord, Store, StoredPage


def open_store(
    folder: Path,
    dim: int,
    qdrant_url: str | None = None,
    api_key: str | None = None,
    storage: str = DEFAULT_STORAGE,
) -> Store:
    """The embedded store in `folder`, or the Qdrant at `qdrant_url` when one is given; a new
    one keeps its vectors as `storage` says (vdr.storage), an existing one as it was made."""
    if qdrant_url:
        from vdr.store.server import ServerStore

        return ServerStore(qdrant_url, dim, api_key=api_key, storage=storage)
    from vdr.store.edge import EdgeStore

    return EdgeStore(folder, dim, storage)


__all__ = ["Hit", "IndexedDocument", "PageRecord", "Store", "StoredPage", "open_store"]
