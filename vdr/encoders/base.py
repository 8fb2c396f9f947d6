"""The encoder contract every retriever fulfils: the default text-grid encoder and the VLMs.

Storage, MaxSim and heatmaps only ever see these two dataclasses, so an encoder is free in how
it reads a page as long as it says where on the page each of its vectors sits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vdr.pages import Page


@dataclass(frozen=True)
class PageEmbedding:
    """A page as a multi-vector placed on its patch grid.

    vectors:     [n, dim] float32, L2-normalised rows (n may be 0 for a blank page)
    patch_index: [n] int32, row-major index into the grid of the patch each vector sits in;
                 several vectors may share a patch (text tokens), a VLM has one per patch
    grid:        (rows, cols) of the page's patch grid
    covers:      after token pooling a vector stands for several patches: (vector [m],
                 patch [m]) int32 pairs saying which; patch_index then holds one of each
                 vector's patches. None: each vector covers just its patch_index.
    """

    vectors: np.ndarray
    patch_index: np.ndarray
    grid: tuple[int, int]
    covers: tuple[np.ndarray, np.ndarray] | None = None

    def placements(self) -> tuple[np.ndarray, np.ndarray]:
        """(vector [m], patch [m]) int pairs: every patch each vector stands for."""
        if self.covers is None:
            return np.arange(len(self.vectors)), self.patch_index
        return self.covers

    def __post_init__(self) -> None:
        rows, cols = self.grid
        if self.vectors.ndim != 2 or self.patch_index.shape != (self.vectors.shape[0],):
            raise ValueError(
                f"vectors {self.vectors.shape} and patch_index {self.patch_index.shape} disagree"
            )
        if (
            self.patch_index.size
            and not 0 <= self.patch_index.min() <= self.patch_index.max() < rows * cols
        ):
            raise ValueError(f"patch_index outside the {rows}x{cols} grid")
        if self.covers is not None:
            vector, patch = self.covers
            if vector.shape != patch.shape or (
                vector.size and (vector.max() >= len(self.vectors) or patch.max() >= rows * cols)
            ):
                raise ValueError("covers pairs do not fit the vectors and the grid")


@dataclass(frozen=True)
class QueryEmbedding:
    """A query as one vector per token.

    vectors:   [t, dim] float32, L2-normalised
    tokens:    the t token strings, for heatmap labels
    mask:      [t] bool; the tokens that count in MaxSim scoring (padding never does; a
               ColPali-family model's query augmentation tokens do, as in its training)
    word_mask: [t] bool; the tokens of the query's own words, which get heatmaps (no special,
               prefix, augmentation or padding tokens); None means the same as mask
    """

    vectors: np.ndarray
    tokens: tuple[str, ...]
    mask: np.ndarray
    word_mask: np.ndarray | None = None

    def scoring_vectors(self) -> np.ndarray:
        """[m, dim] float32: the vectors of the tokens that count, m = mask.sum()."""
        return self.vectors[self.mask]

    def words(self) -> np.ndarray:
        """[t] bool: word_mask, or mask when the encoder makes no difference."""
        return self.mask if self.word_mask is None else self.word_mask


class Encoder(ABC):
    """Turns pages and queries into multi-vectors in one shared space.

    name:       identifier recorded in an index; an index refuses to open with another encoder
    dim:        vector width
    uses_words: True when encode_pages reads Page.words (so the indexer must OCR pages that
                have no text layer); a VLM reads only Page.image
    """

    name: str
    dim: int
    uses_words: bool

    @abstractmethod
    def encode_pages(self, pages: Sequence[Page]) -> list[PageEmbedding]:
        """One PageEmbedding per page, in order. Results do not depend on batch composition."""

    @abstractmethod
    def encode_queries(self, texts: Sequence[str]) -> list[QueryEmbedding]:
        """One QueryEmbedding per text, in order."""

    def settings(self) -> dict[str, Any]:
        """Everything besides the name that changes the vectors; recorded in the index."""
        return {}


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero). [n, dim] float32 -> same."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when a GPU is visible, else "cpu"; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
