"""Training pairs (query, positive page) from the two data formats AGREE reads.

- A BEIR/ViDoRe-style folder:
    queries.jsonl  one {"qid" | "_id", "text"} per line
    qrels.tsv      "qid <TAB> doc_id <TAB> page <TAB> grade" (vdr's evaluation sets, page
                   1-based within pdfs/DOC_ID.pdf), or BEIR's "query-id <TAB> corpus-id <TAB>
                   score" with corpus-id naming images/CORPUS_ID.{png,jpg,jpeg}; a header line
                   is skipped; pairs with grade/score 0 are not positives
    pdfs/ or images/
- A JSONL file: one {"query", "image"} per line; image is a path relative to the file (a PNG or
  JPEG, or a PDF with an optional 1-based "page", default 1).

Every pair gets a stable id from its query and its page (the file's path as the data names it,
relative to the folder or the JSONL file, and the page number), so annotation files keep their
names whatever the order or the other pairs in the data, and when the data folder moves.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vdr.errors import VdrError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Pair:
    """A query and one page that answers it.

    source: absolute path of the page's image file, or of its PDF
    page:   1-based page number in a PDF; None for an image file
    name:   the file as the data names it (relative to the data's folder); the id's part
    """

    query: str
    source: Path
    page: int | None
    name: str

    @property
    def id(self) -> str:
        """16 hex characters from the query, the file's name and the page."""
        key = json.dumps([self.query, self.name, self.page])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def image(self) -> Image.Image:
        """The page as an RGB image (PDF pages rendered at the indexer's resolution)."""
        if self.page is None:
            with Image.open(self.source) as image:
                return image.convert("RGB")
        from vdr.indexer.pdf import render_pages

        return render_pages(self.source, self.page, self.page)[0]

    def describe(self) -> dict[str, str | int | None]:
        """The pair as JSON-ready metadata (reloadable with `Pair.from_description`)."""
        return {
            "query": self.query,
            "source": str(self.source),
            "page": self.page,
            "name": self.name,
        }

    @classmethod
    def from_description(cls, description: dict) -> Pair:
        source = Path(description["source"])
        return cls(description["query"], source, description["page"], description["name"])


def load_pairs(data: Path) -> list[Pair]:
    """Every (query, positive page) pair of `data`, a folder or a .jsonl file, in file order."""
    data = Path(data).expanduser().absolute()
    if data.is_dir():
        return _folder_pairs(data)
    if data.suffix == ".jsonl" and data.is_file():
        return _jsonl_pairs(data)
    raise VdrError(
        f"'{data}' is neither a data folder (queries.jsonl, qrels.tsv) nor a .jsonl file"
    )


def _jsonl_pairs(path: Path) -> list[Pair]:
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            source = (path.parent / row["image"]).absolute()
            page = int(row.get("page", 1)) if source.suffix.lower() == ".pdf" else None
            pairs.append(Pair(str(row["query"]), source, page, str(row["image"])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise VdrError(
                f"{path.name} line {number} is not a {{query, image}} pair ({error})"
            ) from error
    for pair in pairs:
        if not pair.source.is_file():
            raise VdrError(f"{path.name} names '{pair.source}', which does not exist")
    return pairs


def _folder_pairs(folder: Path) -> list[Pair]:
    queries_file, qrels_file = folder / "queries.jsonl", folder / "qrels.tsv"
    for required in (queries_file, qrels_file):
        if not required.exists():
            raise VdrError(f"'{folder}' is not a data folder: '{required.name}' is missing")
    texts = {}
    for number, line in enumerate(queries_file.read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                texts[str(row.get("qid", row.get("_id")))] = str(row["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise VdrError(f"queries.jsonl line {number} is not a query ({error})") from error
    pairs = []
    for number, line in enumerate(qrels_file.read_text().splitlines(), 1):
        fields = line.split("\t")
        if not line.strip() or (number == 1 and not fields[-1].strip().lstrip("-").isdigit()):
            continue  # blank, or BEIR's header
        try:
            qid, *place, grade = fields
            if int(grade) <= 0:
                continue
            source, page = _page_of(folder, place)
            pairs.append(Pair(texts[qid], source, page, source.relative_to(folder).as_posix()))
        except (KeyError, ValueError) as error:
            raise VdrError(f"qrels.tsv line {number} does not name a query and a page") from error
    return pairs


def _page_of(folder: Path, place: list[str]) -> tuple[Path, int | None]:
    """qrels' middle columns -> (file, page): [doc_id, page] is a PDF page, [corpus_id] an
    image."""
    if len(place) == 2:
        pdf = folder / "pdfs" / f"{place[0]}.pdf"
        if not pdf.is_file():
            raise VdrError(f"qrels.tsv names '{place[0]}', but '{pdf}' does not exist")
        return pdf, int(place[1])
    if len(place) != 1:
        raise ValueError(place)
    for suffix in IMAGE_SUFFIXES:
        image = folder / "images" / f"{place[0]}{suffix}"
        if image.is_file():
            return image, None
    raise VdrError(f"qrels.tsv names '{place[0]}', but images/ has no such PNG or JPEG")
