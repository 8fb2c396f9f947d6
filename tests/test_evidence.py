"""Evidence: the words on a result page that matched the query, with their boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vdr import Index
from vdr.encoders.textgrid import TextGridEncoder
from vdr.evidence import find_evidence
from vdr.heatmap import SimilarityMaps
from vdr.pages import Word
from vdr.stop_words import ENGLISH_STOP_WORDS

from conftest import make_pdf

LINES = [
    "Every rooftop installation was preceded by a structural survey of the roof.",
    "The school now uses a live display in its entrance hall.",
    "Volunteers fitted panels on the dairy barn before the summer.",
    "The finance committee audited the accounts in December.",
]


def test_snippet_of_a_query_copied_from_the_page(tmp_path: Path, encoder: TextGridEncoder) -> None:
    del encoder
    pdf = make_pdf(
        tmp_path / "report.pdf", [[(line, 72, 100 + 40 * i, 12) for i, line in enumerate(LINES)]]
    )
    query = "live display in its entrance hall"
    with Index(tmp_path / "index") as index:
        index.add([pdf])
        (hit,) = index.search(query, k=1)
    assert hit.evidence is not None
    snippet_words = {word.strip(".,") for word in hit.evidence.snippet.split()}
    assert set(query.split()) <= snippet_words
    assert "finance" not in hit.evidence.snippet  # other lines stay out
    # Boxes are in points from the top-left: the matched words sit on the second line.
    tops = {round(box[1]) for box in hit.evidence.boxes}
    assert all(130 <= top <= 145 for top in tops), tops
    assert all(0 <= x0 < x1 <= 595.3 for x0, _, x1, _ in hit.evidence.boxes)


def test_evidence_on_a_page_without_words_is_empty() -> None:
    maps = SimilarityMaps(np.ones((1, 2, 2), np.float32), ("x",), ("x",), (0,))
    evidence = find_evidence(maps, (), (612.0, 792.0))
    assert evidence.snippet == "" and evidence.boxes == () and evidence.words == ()


def test_a_patch_without_words_points_to_the_nearest_word() -> None:
    maps = np.full((1, 4, 4), 0.1, np.float32)
    maps[0, 3, 3] = 0.9  # bottom-right patch: nothing printed there
    words = (
        Word("top", (0.05, 0.05, 0.2, 0.1), 0),
        Word("corner", (0.6, 0.6, 0.7, 0.7), 1),
    )
    maps_of = SimilarityMaps(maps, ("bay",), ("bay",), (0,))
    evidence = find_evidence(maps_of, words, (100.0, 100.0))
    assert evidence.words == ("corner",)
    assert evidence.boxes == ((60.0, 60.0, 70.0, 70.0),)


def test_evidence_shows_content_words_only(tmp_path: Path, encoder: TextGridEncoder) -> None:
    del encoder
    pdf = make_pdf(
        tmp_path / "island.pdf",
        [
            [
                ("The volcano erupted near the island of Kos in the spring.", 72, 100, 12),
                ("Most of the fishing boats of the harbour stayed in the bay.", 72, 300, 12),
            ]
        ],
    )
    with Index(tmp_path / "index") as index:
        index.add([pdf])
        (hit,) = index.search("the volcano of the island", k=1)
    assert hit.evidence is not None
    shown = {word.strip(".,").lower() for word in hit.evidence.words}
    assert {"volcano", "island"} <= shown
    assert not shown & {"the", "of", "in", "near"}, shown
    assert len(hit.evidence.boxes) == len(hit.evidence.words)


def test_stop_words_are_the_published_list() -> None:
    """vdr.stop_words is scikit-learn's list verbatim, not one tuned on any data."""
    published = pytest.importorskip("sklearn.feature_extraction.text").ENGLISH_STOP_WORDS
    assert published == ENGLISH_STOP_WORDS
