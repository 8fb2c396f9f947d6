"""The page images of an index: one JPEG per page, named by page id, for viewing and heatmaps."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from vdr.errors import NotFound

SUFFIX = ".jpg"
# 150 dpi JPEG at this quality: ~150 KB a page, text still crisp; PNG would take ~10x longer.
JPEG_QUALITY = 85


class PageImages:
    """A folder of page images. Writes are atomic, so a crash never leaves half an image."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, page_id: str) -> Path:
        if not page_id or "/" in page_id or "\\" in page_id or page_id.startswith("."):
            raise NotFound(f"'{page_id}' is not a page id")
        return self.folder / f"{page_id}{SUFFIX}"

    def save(self, page_id: str, image: Image.Image) -> None:
        target = self.path(page_id)
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                image.save(f, format="JPEG", quality=JPEG_QUALITY)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, page_id: str) -> Image.Image:
        path = self.path(page_id)
        if not path.exists():
            raise NotFound(f"no image for page '{page_id}'")
        with Image.open(path) as image:
            return image.convert("RGB")

    def page_ids(self) -> set[str]:
        return {p.name[: -len(SUFFIX)] for p in self.folder.glob(f"*{SUFFIX}")}

    def delete_documents(self, doc_ids: Iterable[str]) -> None:
        for doc_id in doc_ids:
            for path in self.folder.glob(f"{doc_id}-*{SUFFIX}"):
                path.unlink(missing_ok=True)

    def keep_only(self, doc_ids: set[str]) -> int:
        """Delete images (and stray temp files) of documents not in `doc_ids`; returns count."""
        removed = 0
        for path in self.folder.iterdir():
            stray = path.suffix == ".tmp"
            if stray or (path.suffix == SUFFIX and path.name.rsplit("-", 1)[0] not in doc_ids):
                path.unlink(missing_ok=True)
                removed += 1
        return removed
