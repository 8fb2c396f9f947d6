"""Grounding: do heatmaps point at the query's words? A pointing game on a labelled set.

    python benches/grounding.py [SET_DIR] [--model NAME_OR_DIR] [--index DIR]

For every extractive query and each of its relevant pages (qrels), considering only the query's
content words (no stopwords) that are printed on that page:
- whole query: does the hottest patch of the whole-query map (max over words) lie on a printed
  word that is one of the query's content words?
- per word: for each such word, does its own map's hottest patch lie on that word?
Reports both shares and the pair counts, as a markdown table with the machine noted.
Default set: ../shared/bench/dev; the index is built in a temporary folder unless --index.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vdr import Index
from vdr.encoders import DEFAULT_MODEL
from vdr.eval import load_set
from vdr.evidence import words_on_patch
from vdr.pages import Word

from index_throughput import DEFAULT_PDFS, machine

STOPWORDS = frozenset(
    {
        *("a", "an", "and", "are", "as", "at", "be", "by", "can", "could", "did", "do", "does"),
        *("for", "from", "has", "have", "how", "i", "in", "into", "is", "it", "its", "of", "on"),
        *("or", "over", "page", "pages", "shown", "show", "shows", "should", "than", "that"),
        *("the", "then", "there", "these", "this", "those", "to", "under", "was", "what"),
        *("when", "where", "which", "who", "why", "with", "without", "would"),
    }
)


def subwords(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def hottest_patch_words(grid_map: np.ndarray, words: tuple[Word, ...]) -> set[str]:
    """The subwords printed on the patch where `grid_map` ([rows, cols]) peaks."""
    rows, cols = grid_map.shape
    patch = int(np.nanargmax(grid_map))
    found = words_on_patch(words, patch // cols, patch % cols, rows, cols)
    return set().union(*(subwords(words[i].text) for i in found)) if found else set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set_dir", nargs="?", type=Path, default=DEFAULT_PDFS.parent)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--index", type=Path, help="index folder to build or reuse")
    args = parser.parse_args()
    queries, qrels = load_set(args.set_dir)
    folder = args.index or Path(tempfile.mkdtemp(prefix="vdr-grounding-")) / "index"
    whole_hits = whole_pairs = word_hits = word_pairs = 0
    with Index(folder, model=args.model) as index:
        index.add([args.set_dir / "pdfs"])
        page_ids = {
            (Path(d.doc_path).stem, p): f"{d.doc_id}-{p}"
            for d in index.documents()
            for p in range(1, d.n_pages + 1)
        }
        for query in (q for q in queries if q.type == "extractive"):
            for key in qrels.get(query.qid, {}):
                page = index.page(page_ids[key])
                maps = index.similarity(query.text, page.page_id)
                printed = (
                    set().union(*(subwords(w.text) for w in page.words)) if page.words else set()
                )
                content = [
                    (i, w) for i, w in enumerate(maps.words) if w not in STOPWORDS and w in printed
                ]
                if not content:
                    continue
                whole_pairs += 1
                targets = {w for _, w in content}
                whole_hits += bool(hottest_patch_words(maps.whole_query(), page.words) & targets)
                word_maps = maps.word_maps()
                for i, word in content:
                    word_pairs += 1
                    word_hits += word in hottest_patch_words(word_maps[i], page.words)
    today = datetime.date.today()
    print(f"{args.model} on {args.set_dir}, extractive queries, {today}, {machine()}")
    print("\n| pointing game | hits | pairs | share |\n|---|---:|---:|---:|")
    for name, hits, pairs in (
        ("whole-query map peaks on a query word", whole_hits, whole_pairs),
        ("each content word's map peaks on that word", word_hits, word_pairs),
    ):
        print(f"| {name} | {hits} | {pairs} | {hits / max(pairs, 1):.3f} |")


if __name__ == "__main__":
    main()
