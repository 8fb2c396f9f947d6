"""Annotating a data set: the teacher's map of every (query, positive page) pair, pooled onto the
retriever's patch grid, one file per pair.

An annotation folder holds
    annotation.json   the run's settings (teacher, layers, heads, resolution, retriever grid);
                      a later run into the same folder must use the same ones
    maps/ID.npz       per pair: "teacher" [H, W] float32 (the raw map on the teacher's grid),
                      "target" [rows, cols] float32 (pooled onto the retriever's grid, sums to 1)
                      and "meta", a JSON string: the pair (query, source, page) and both grids

Files are written whole (a temporary file renamed into place), so a run that is stopped leaves
only complete files, and the next run skips them and annotates the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from vdr.agree.data import Pair
from vdr.agree.downsample import downsample
from vdr.agree.teacher import Teacher
from vdr.errors import VdrError

SETTINGS_FILE = "annotation.json"
MAPS_DIR = "maps"

GridOf = Callable[[Image.Image], tuple[int, int]]


@dataclass(frozen=True)
class Annotation:
    """One pair's maps.

    teacher: [H, W] float32, the teacher's attention mass on its own image grid
    target:  [rows, cols] float32, `teacher` pooled onto the retriever's grid, summing to 1
    """

    pair: Pair
    teacher: np.ndarray
    target: np.ndarray

    def target_on(self, grid: tuple[int, int]) -> np.ndarray:
        """The target on `grid`: the stored one when the grids agree, else pooled afresh from
        the teacher's map (a retriever other than the one the folder was annotated for)."""
        if tuple(self.target.shape) == tuple(grid):
            return self.target
        return downsample(self.teacher, grid)


@dataclass(frozen=True)
class AnnotateReport:
    annotated: int  # pairs annotated by this run
    skipped: int  # pairs whose file was there already
    folder: Path


def retriever_grid(model: str) -> GridOf:
    """The patch grid that the retriever `model` (a colpali-engine checkpoint, hub id or
    directory, or a LoRA adapter on one) puts a page on, from its processor alone (no
    weights are loaded): the same geometry the encoder uses when it indexes."""
    from vdr.encoders.colpali import load_processor, patch_geometry, resolve_checkpoint

    checkpoint = resolve_checkpoint(model)
    processor = load_processor(checkpoint)

    def grid_of(image: Image.Image) -> tuple[int, int]:
        batch = processor.process_images([image])
        return patch_geometry(processor, checkpoint.family, batch, 0)[2]

    return grid_of


def annotate(
    pairs: Sequence[Pair],
    teacher: Teacher,
    grid_of: GridOf,
    out: Path,
    grid_from: str,
    batch_size: int = 4,
    progress: bool = True,
) -> AnnotateReport:
    """Annotate every pair of `pairs` that has no file in `out` yet, `batch_size` at a time.

    grid_of:   page image -> the retriever's (rows, cols) for it (see `retriever_grid`)
    grid_from: the retriever's name, recorded in the settings
    """
    settings = {**teacher.settings(), "grid_from": grid_from}
    _claim(Path(out), settings)
    todo = [pair for pair in pairs if not annotation_path(out, pair).exists()]
    done = 0
    with tqdm(total=len(todo), disable=not progress, desc="annotate", unit="pair") as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            images = [pair.image() for pair in chunk]
            maps = teacher.maps([pair.query for pair in chunk], images)
            for pair, image, teacher_map in zip(chunk, images, maps, strict=True):
                target = downsample(teacher_map, grid_of(image))
                write_annotation(out, Annotation(pair, teacher_map, target))
            done += len(chunk)
            bar.update(len(chunk))
    return AnnotateReport(annotated=done, skipped=len(pairs) - len(todo), folder=Path(out))


def annotation_path(folder: Path, pair: Pair) -> Path:
    return Path(folder) / MAPS_DIR / f"{pair.id}.npz"


def write_annotation(folder: Path, annotation: Annotation) -> Path:
    """Write one pair's file whole (temporary file, then rename); returns its path."""
    path = annotation_path(folder, annotation.pair)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        **annotation.pair.describe(),
        "teacher_grid": list(annotation.teacher.shape),
        "grid": list(annotation.target.shape),
    }
    partial = path.with_suffix(".partial.npz")
    np.savez(
        partial,
        teacher=annotation.teacher.astype(np.float32),
        target=annotation.target.astype(np.float32),
        meta=np.array(json.dumps(meta)),
    )
    os.replace(partial, path)
    return path


def read_annotations(folder: Path) -> list[Annotation]:
    """Every pair annotated in `folder`, ordered by file name (stable across runs)."""
    paths = sorted((Path(folder) / MAPS_DIR).glob("*.npz"))
    paths = [path for path in paths if not path.name.endswith(".partial.npz")]
    if not paths:
        raise VdrError(f"'{folder}' holds no annotations (run `vdr agree annotate` first)")
    out = []
    for path in paths:
        with np.load(path, allow_pickle=False) as stored:
            pair = Pair.from_description(json.loads(str(stored["meta"])))
            out.append(Annotation(pair, stored["teacher"], stored["target"]))
    return out


def _claim(folder: Path, settings: dict[str, Any]) -> None:
    """Record the run's settings in a new folder; refuse a folder annotated otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / SETTINGS_FILE
    if file.exists():
        before = json.loads(file.read_text())
        changed = sorted(
            key for key in settings.keys() | before.keys() if before.get(key) != settings.get(key)
        )
        if changed:
            raise VdrError(
                f"'{folder}' was annotated with other settings ({', '.join(changed)} differ); "
                "use another --out folder"
            )
        return
    file.write_text(json.dumps(settings, indent=1))
