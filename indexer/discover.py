"""Finding documents (PDFs and page images) under the paths a user names, and their
content identity."""

from __future__ import annotations

import hashlib
from pathlib import Path

from vdr.errors import NotFound
from vdr.indexer.images import is_image_name

# Hex digits of the SHA-256 kept as a document id: 64 bits, collision-free at any real scale.
DOC_ID_HEX = 16


def discover(paths: list[Path]) -> list[Path]:
    """Every file named, and every document under every folder named (recursively,
    sorted): *.pdf and the page images vdr reads (vdr.indexer.images.IMAGE_SUFFIXES).

    Paths come back absolute. Files named explicitly are kept whatever their extension, so
    that a non-PDF passed by mistake is reported rather than silently ignored.
    """
    found: dict[Path, None] = {}
    for path in paths:
        path = path.expanduser().absolute()
        if path.is_dir():
            found.update(dict.fromkeys(sorted(p for p in path.rglob("*") if _is_document(p))))
        elif path.is_file():
            found[path] = None
        else:
            raise NotFound(f"'{path}' does not exist")
    return list(found)


def content_id(path: Path) -> str:
    """A document's id: the first DOC_ID_HEX hex digits of its SHA-256.

    Same bytes, same id, wherever the file lives: a moved file is not re-encoded, a changed
    one is a new document.
    """
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:DOC_ID_HEX]


def is_under(path: str, roots: list[Path]) -> bool:
    """True when `path` is one of `roots` or lies inside one of them."""
    candidate = Path(path)
    return any(candidate == root or root in candidate.parents for root in roots)


def _is_document(path: Path) -> bool:
    return (path.suffix.lower() == ".pdf" or is_image_name(path)) and path.is_file()
