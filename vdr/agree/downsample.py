"""Spatial-preserving downsampling of a teacher map onto a retriever's patch grid (AGREE §4.2).

The map is reshaped to the teacher's image grid and max-pooled adaptively onto the retriever's
grid. Output cell (i, j) covers teacher rows floor(i*H/h) to ceil((i+1)*H/h) - 1 and the
matching columns, as `torch.nn.functional.adaptive_max_pool2d` does; when a grid does not divide
evenly, neighbouring windows overlap by a row or column, so a peak on a shared row shows in both
cells. Max rather than mean keeps a small, sharp peak from being averaged away.
"""

from __future__ import annotations

import numpy as np
import torch


def downsample(teacher_map: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The teacher's map pooled onto `grid` and normalised to sum 1.

    teacher_map: [H, W] float, non-negative (attention mass per teacher image token)
    grid:        (rows, cols) of the retriever's patch grid; either may exceed H or W (a cell
                 then repeats its one teacher value)
    returns:     [rows, cols] float32, summing to 1 (uniform when the map is all zeros)

    >>> hot = np.zeros((4, 4)); hot[3, 0] = 1.0
    >>> downsample(hot, (2, 2)).tolist()
    [[0.0, 0.0], [1.0, 0.0]]
    """
    if teacher_map.ndim != 2:
        raise ValueError(f"a teacher map is [rows, cols], not {teacher_map.shape}")
    source = torch.as_tensor(teacher_map, dtype=torch.float32)[None, None]
    pooled = torch.nn.functional.adaptive_max_pool2d(source, grid)[0, 0].numpy()
    return normalise(pooled)


def normalise(values: np.ndarray) -> np.ndarray:
    """`values` scaled to sum 1, float32; all-zero input gives the uniform map.

    The sum, not the maximum, is kept at 1 so that the grounding metric can read a map as a
    share of attention mass, and the KL loss can use it as a distribution as it is.
    """
    total = float(values.sum())
    if total <= 0:
        return np.full(values.shape, 1 / values.size, dtype=np.float32)
    return (values / total).astype(np.float32)
