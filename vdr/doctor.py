"""`vdr doctor`: does an index's store agree with its page images, and is every document whole?

The indexer writes a page's image before its point and sweeps images no point refers to, so a
crash leaves at worst orphan images, temp files and documents with fewer pages than they have;
anything else (an image deleted by hand, a page numbered outside its document) is damage from
outside. check() finds all of it; repair() mends what the index itself can: it deletes orphans,
re-renders missing images from their files, and re-indexes incomplete documents whose files are
still where they were (and unchanged); what it cannot mend it names.

The token first stage is derived from the store, so its troubles cost speed, never pages: a
build killed midway leaves a scratch folder as large as the index, which repair() deletes, and
files cut short by a machine crash (or missing, in one an older vdr wrote) leave an index
searches pass over, which repair() deletes for the next optimize to build again. A stale one
(indexing runs since it was built) is no damage: searches run the pooled stage beside it until
the next optimize.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vdr.errors import BadDocument
from vdr.index import TOKEN_INDEX_DIR, Index
from vdr.indexer.discover import content_id
from vdr.indexer.documents import open_document
from vdr.indexer.pdf import RENDER_DPI, fitting_dpi
from vdr.page_images import SUFFIX
from vdr.store.base import page_id_of
from vdr.token_index import remove_token_index, scratch_folder

# Payload fields a checkup reads for every point.
_FIELDS = ["page_id", "doc_id", "doc_path", "page", "n_pages"]


@dataclass
class Checkup:
    """What check() found; every list is sorted. Healthy when all lists are empty."""

    pages: int
    images: int
    documents: int
    missing_images: list[str] = field(default_factory=list)  # page ids whose image is gone
    orphan_images: list[str] = field(default_factory=list)  # images no page refers to
    temp_files: list[str] = field(default_factory=list)  # left by interrupted image writes
    incomplete: list[str] = field(default_factory=list)  # doc ids missing some of their pages
    misnumbered: list[str] = field(default_factory=list)  # page ids outside 1..n_pages or
    # not named after their (document, page)
    token_stage: str = "none"  # Index.token_stage: current, stale, none or broken
    unfinished_builds: list[str] = field(default_factory=list)  # folders a killed build left

    @property
    def healthy(self) -> bool:
        return not (
            self.missing_images
            or self.orphan_images
            or self.temp_files
            or self.incomplete
            or self.misnumbered
            or self.unfinished_builds
            or self.token_stage == "broken"
        )


@dataclass
class Repairs:
    """What repair() did, and what it could not do (page or doc id -> why)."""

    removed_files: int = 0
    removed_folders: list[str] = field(default_factory=list)  # unfinished or broken builds
    rendered: list[str] = field(default_factory=list)
    reindexed: list[str] = field(default_factory=list)
    unrepaired: dict[str, str] = field(default_factory=dict)


def check(index: Index) -> Checkup:
    """Compare every point of the store with the page images folder. Reads payloads only."""
    payloads = list(index.store.payloads(_FIELDS))
    point_ids = {p["page_id"] for p in payloads}
    folder = index.images.folder
    image_ids = index.images.page_ids()
    pages_per_doc = Counter(p["doc_id"] for p in payloads)
    n_pages = {p["doc_id"]: int(p["n_pages"]) for p in payloads}
    # Pages of a damaged document that could not be read are not missing (vdr.ledger).
    unreadable = {o.doc_id: len(o.bad_pages) for o in index.outcomes() if o.status == "partial"}
    scratch = scratch_folder(index.path / TOKEN_INDEX_DIR)
    return Checkup(
        pages=len(payloads),
        images=len(image_ids),
        documents=len(n_pages),
        missing_images=sorted(point_ids - image_ids),
        orphan_images=sorted(image_ids - point_ids),
        temp_files=sorted(p.name for p in folder.iterdir() if p.suffix != SUFFIX),
        incomplete=sorted(
            d for d, n in n_pages.items() if pages_per_doc[d] + unreadable.get(d, 0) < n
        ),
        misnumbered=sorted(
            p["page_id"]
            for p in payloads
            if not 1 <= int(p["page"]) <= int(p["n_pages"])
            or p["page_id"] != page_id_of(p["doc_id"], int(p["page"]))
        ),
        token_stage=index.token_stage,
        unfinished_builds=[scratch.name] if scratch.exists() else [],
    )


def repair(index: Index, checkup: Checkup) -> Repairs:
    """Mend what `checkup` found (see the module docstring); check() again to confirm."""
    done = Repairs()
    folder = index.images.folder
    for name in checkup.temp_files:
        (folder / name).unlink(missing_ok=True)
    for page_id in checkup.orphan_images:
        index.images.path(page_id).unlink(missing_ok=True)
    done.removed_files = len(checkup.temp_files) + len(checkup.orphan_images)
    for name in checkup.unfinished_builds:
        shutil.rmtree(index.path / name, ignore_errors=True)
        done.removed_folders.append(name)
    if checkup.token_stage == "broken":
        remove_token_index(index.path / TOKEN_INDEX_DIR)
        done.removed_folders.append(TOKEN_INDEX_DIR)
    documents = {d.doc_id: d for d in index.documents()}
    for page_id in checkup.misnumbered:
        done.unrepaired[page_id] = "its page number does not fit its document: re-index the file"
    for doc_id in checkup.incomplete:
        path = _unchanged_file(documents[doc_id].doc_path, doc_id)
        if path is None:
            done.unrepaired[doc_id] = f"'{documents[doc_id].doc_path}' is gone or changed"
            continue
        index.add([path])
        done.reindexed.append(doc_id)
    for page_id in checkup.missing_images:
        page = index.store.get_page(page_id)
        if page is None or page.doc_id in done.reindexed:
            continue  # deleted since, or rendered again by the re-index
        path = _unchanged_file(page.doc_path, page.doc_id)
        if path is None:
            done.unrepaired[page_id] = f"'{page.doc_path}' is gone or changed"
            continue
        try:
            dpi = fitting_dpi([page.size], RENDER_DPI)
            (image,) = open_document(path).render(page.page, page.page, dpi=dpi)
        except BadDocument as error:
            done.unrepaired[page_id] = str(error)
            continue
        index.images.save(page_id, image)
        done.rendered.append(page_id)
    return done


def _unchanged_file(doc_path: str, doc_id: str) -> Path | None:
    """The document's file when it is still at doc_path with the same contents."""
    path = Path(doc_path)
    try:
        return path if path.is_file() and content_id(path) == doc_id else None
    except OSError:
        return None
