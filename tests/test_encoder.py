"""The encoder contract, on the real default encoder."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vdr.encoders.textgrid import MAX_TOKENS, TextGridEncoder, patch_grid
from vdr.pages import Page, Word

BLANK = Image.new("RGB", (8, 8), "white")


def page_of(texts: list[tuple[str, tuple[float, float, float, float], int]]) -> Page:
    words = tuple(Word(text=t, box=box, block=block) for t, box, block in texts)
    return Page(image=BLANK, words=words, size=(612.0, 792.0))


def sentence_page(sentence: str, top: float = 0.1, block: int = 0) -> Page:
    words = sentence.split()
    width = 0.8 / len(words)
    return page_of(
        [
            (w, (0.1 + i * width, top, 0.1 + (i + 0.9) * width, top + 0.02), block)
            for i, w in enumerate(words)
        ]
    )


def test_page_embedding_shapes_and_norms(encoder: TextGridEncoder) -> None:
    page = sentence_page("Quarterly generation per site in megawatt hours")
    (embedding,) = encoder.encode_pages([page])
    assert embedding.grid == patch_grid(page.size)
    assert embedding.vectors.dtype == np.float32 and embedding.vectors.shape[1] == encoder.dim
    assert len(embedding.vectors) >= len(page.words)  # at least one piece per word
    assert embedding.patch_index.shape == (len(embedding.vectors),)
    np.testing.assert_allclose(np.linalg.norm(embedding.vectors, axis=1), 1.0, atol=1e-5)


def test_word_pieces_land_in_the_patch_under_their_word(encoder: TextGridEncoder) -> None:
    # One word at the bottom-right of the page: every vector must sit in that corner.
    page = page_of([("photovoltaic", (0.80, 0.90, 0.95, 0.92), 0)])
    (embedding,) = encoder.encode_pages([page])
    rows, cols = embedding.grid
    row, col = embedding.patch_index // cols, embedding.patch_index % cols
    assert set(row) == {int(0.91 * rows)}
    assert col.min() >= int(0.80 * cols) and col.max() <= int(0.95 * cols)
    assert len(set(col)) > 1  # a word split into several pieces spreads across its box


def test_page_without_words_is_empty(encoder: TextGridEncoder) -> None:
    (embedding,) = encoder.encode_pages([page_of([])])
    assert embedding.vectors.shape == (0, encoder.dim)
    assert embedding.patch_index.shape == (0,)


def test_embeddings_do_not_depend_on_the_batch(encoder: TextGridEncoder) -> None:
    target = sentence_page("brake pad replacement with a hex key")
    others = [sentence_page(" ".join(["long context words"] * 20)), sentence_page("tyre pressure")]
    (alone,) = encoder.encode_pages([target])
    together = encoder.encode_pages([*others, target])[-1]
    np.testing.assert_array_equal(alone.patch_index, together.patch_index)
    cosine = (alone.vectors * together.vectors).sum(axis=1)
    assert cosine.min() > 0.995


def test_long_blocks_are_windowed_without_losing_words(encoder: TextGridEncoder) -> None:
    words = [f"item{i}" for i in range(3 * MAX_TOKENS)]
    page = sentence_page(" ".join(words))
    (embedding,) = encoder.encode_pages([page])
    pieces = encoder.tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    assert len(embedding.vectors) == len(pieces["input_ids"])


def test_query_mask_drops_special_tokens(encoder: TextGridEncoder) -> None:
    (query,) = encoder.encode_queries(["harbour dredging permit"])
    assert query.tokens[0] == "[CLS]" and query.tokens[-1] == "[SEP]"
    assert not query.mask[0] and not query.mask[-1] and query.mask[1:-1].all()
    assert query.scoring_vectors().shape == (len(query.tokens) - 2, encoder.dim)


def test_query_stop_words_are_not_scored_but_keep_their_heatmaps(
    encoder: TextGridEncoder,
) -> None:
    (query,) = encoder.encode_queries(["what is the theory of the harbour permits"])
    scored = {t for t, m in zip(query.tokens, query.mask, strict=True) if m}
    drawn = {t for t, w in zip(query.tokens, query.words(), strict=True) if w}
    assert {"what", "is", "the", "of"} <= drawn - scored
    assert {"theory", "harbour"} <= scored  # "the" begins "theory" but is not it
    (only_stop_words,) = encoder.encode_queries(["what is this"])
    assert only_stop_words.mask.sum() == 3  # nothing else to search for: keep them


def test_queries_do_not_depend_on_the_batch(encoder: TextGridEncoder) -> None:
    alone = encoder.encode_queries(["harbour"])[0]
    batched = encoder.encode_queries(["a much longer query that forces padding", "harbour"])[1]
    assert alone.tokens == batched.tokens
    assert (alone.vectors * batched.vectors).sum(axis=1).min() > 0.995


def test_matching_words_score_higher_than_unrelated_ones(encoder: TextGridEncoder) -> None:
    pages = [
        sentence_page("replace the worn brake pads"),
        sentence_page("solar panel output in June"),
    ]
    embeddings = encoder.encode_pages(pages)
    query = encoder.encode_queries(["brake pads"])[0].scoring_vectors()
    scores = [float((query @ e.vectors.T).max(axis=1).sum()) for e in embeddings]
    assert scores[0] > scores[1] + 0.5
