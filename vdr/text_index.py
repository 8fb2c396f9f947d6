"""BM25 over a page's printed words (its text layer, or OCR), kept in Qdrant as a sparse vector.

Qdrant supplies the IDF half at query time (its Idf modifier, over the collection as it is
now); each page's vector holds the term-frequency half,
    tf (k1 + 1) / (tf + k1 (1 - b + b n / AVG_WORDS))   (n: the page's number of terms)
and a query's terms weigh 1 each. Terms are runs of lower-cased letters and digits, minus
common English stop words, reduced to their Snowball (Porter 2) English stems, hashed to 31-bit
ids: no vocabulary to keep in step with the index.

Stemming lets "sites" find "site" and "generating" find "generation": BM25 alone on
../shared/bench/dev went from nDCG@5 0.843 to 0.858 with it, and the hybrid default from 0.905
to 0.912 (with stop words left out of the query's MaxSim, vdr.encoders.textgrid).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter
from collections.abc import Iterable

import Stemmer

K1, B = 1.2, 0.75
# Words per page the length normalisation takes as average; fixed, since Qdrant keeps no
# per-field length statistics (the dev set's 314 pages average ~330 terms).
AVG_WORDS = 330
_TERM = re.compile(r"[^\W_]+")
_STOP_WORDS_TEXT = """
    a an and are as at be been but by can did do does for from had has have how i if in into
    is it its no not of on or our so than that the their them then there these they this to
    was we were what when where which while who why will with you your
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
# A PyStemmer stemmer is not safe to share between threads (the server searches in several).
_local = threading.local()


def terms(text: str) -> list[str]:
    """The text's BM25 terms, in order.

    >>> terms("The Harbour dredging-permits, 2024!")
    ['harbour', 'dredg', 'permit', '2024']
    """
    if not hasattr(_local, "stemmer"):
        _local.stemmer = Stemmer.Stemmer("english")
    return _local.stemmer.stemWords([t for t in _TERM.findall(text.lower()) if t not in STOP_WORDS])


def term_id(term: str) -> int:
    """A term's sparse dimension: the first 31 bits of its BLAKE2b digest (stable everywhere)."""
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "big") >> 1


def page_vector(words: Iterable[str]) -> tuple[list[int], list[float]]:
    """(indices, values) of a page's BM25 term weights, from its words in reading order."""
    counts = Counter(t for word in words for t in terms(word))
    length = sum(counts.values())
    norm = K1 * (1 - B + B * length / AVG_WORDS)
    weights: dict[int, float] = {}
    for term, tf in counts.items():  # distinct terms may share an id: add their weights
        index = term_id(term)
        weights[index] = weights.get(index, 0.0) + tf * (K1 + 1) / (tf + norm)
    return list(weights), list(weights.values())


def query_vector(text: str) -> tuple[list[int], list[float]]:
    """(indices, values) of a query: each distinct term once, weight 1."""
    indices = sorted({term_id(t) for t in terms(text)})
    return indices, [1.0] * len(indices)
