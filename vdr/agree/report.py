"""The grounding metric: do a retriever's maps agree with the teacher's (AGREE §5.3, with the
teacher's map standing in for human boxes)?

For each annotated (query, page) pair the retriever encodes the page and the query as it does
when it indexes and searches, and its map of the page is AGREE's student map (losses.py). Two
figures, averaged over pairs:
- top share: the share of the teacher map's mass inside the retriever's top `top_fraction` of
  patches (0.1: a map that ignores the teacher scores about 0.1 on a flat teacher map, and
  up to 1 when its highest patches hold all the teacher's mass);
- cosine: between the two maps (as the cosine loss, without the 1 -).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from vdr.agree.annotate import Annotation
from vdr.agree.losses import student_map
from vdr.encoders.base import Encoder, PageEmbedding, QueryEmbedding
from vdr.errors import VdrError
from vdr.pages import Page

DEFAULT_TOP_FRACTION = 0.1


@dataclass(frozen=True)
class GroundingReport:
    pairs: int
    top_fraction: float
    top_share: float  # mean share of the teacher's mass in the retriever's top patches
    cosine: float  # mean cosine between the retriever's and the teacher's maps


def page_map(query: QueryEmbedding, page: PageEmbedding) -> np.ndarray:
    """The retriever's map of `page` for `query` on the page's grid.

    returns: [rows, cols] float32: per patch, the mean over the query's scoring tokens of the
             token-patch dot products. Needs one vector per patch, as ColPali-family encoders
             give (not the text-grid encoder, nor a pooled index).
    """
    rows, cols = page.grid
    if page.covers is not None or len(page.vectors) != rows * cols:
        raise VdrError("the grounding metric needs an encoder with one vector per patch")
    scores = student_map(torch.from_numpy(query.scoring_vectors()), torch.from_numpy(page.vectors))
    out = np.zeros(rows * cols, dtype=np.float32)
    out[page.patch_index] = scores.numpy()
    return out.reshape(rows, cols)


def agreement(
    student: np.ndarray, target: np.ndarray, top_fraction: float = DEFAULT_TOP_FRACTION
) -> tuple[float, float]:
    """(top share, cosine) of one pair's maps, both [rows, cols]; target sums to 1.

    The top quarter is patch 0, holding half the teacher's mass; cos = 2 / (sqrt(10) sqrt(0.5)):
    >>> share, cos = agreement(np.array([[3.0, 1.0], [0, 0]]), np.array([[0.5, 0.5], [0, 0]]), 0.25)
    >>> share, round(cos, 4)
    (0.5, 0.8944)
    """
    student, target = student.ravel(), target.ravel()
    k = max(1, round(top_fraction * student.size))
    top = np.argsort(-student, kind="stable")[:k]
    norms = float(np.linalg.norm(student) * np.linalg.norm(target))
    cosine = float(student @ target) / norms if norms else 0.0
    return float(target[top].sum()), cosine


def grounding(
    encoder: Encoder,
    annotations: Sequence[Annotation],
    top_fraction: float = DEFAULT_TOP_FRACTION,
    progress: bool = False,
) -> GroundingReport:
    """The grounding metric of `encoder` over `annotations` (one page encoded at a time)."""
    if not annotations:
        raise VdrError("no annotated pairs to measure")
    shares, cosines = [], []
    for annotation in tqdm(annotations, disable=not progress, desc="report", unit="pair"):
        image = annotation.pair.image()
        page = encoder.encode_pages([Page(image=image, words=(), size=image.size)])[0]
        query = encoder.encode_queries([annotation.pair.query])[0]
        share, cosine = agreement(
            page_map(query, page), annotation.target_on(page.grid), top_fraction
        )
        shares.append(share)
        cosines.append(cosine)
    return GroundingReport(
        pairs=len(annotations),
        top_fraction=top_fraction,
        top_share=float(np.mean(shares)),
        cosine=float(np.mean(cosines)),
    )
