"""AGREE, controlled: does the local loss teach a retriever to look where relevance is decided?

    python benches/agree_synthetic.py [--steps 1500] [--train-pages 1024] [--batch-size 16]
        [--lambda 0.1] [--learning-rate 1e-4] [--losses global global+cosine] [--out DIR]

A synthetic set where one region of each page decides relevance, and a teacher that marks it:
- a page is a 4x4 board of cells, each split into two colours (top, bottom) drawn from eight;
  one cell, the key, wears a black frame. The query names the key's colours ("red over blue").
  The other fifteen cells show other colour pairs at random: about a fifth of the other pages
  show the query's pair in an unframed cell, so matching the colours anywhere is not enough,
  the framed cell decides.
- the teacher's map (a 16x16 grid, finer than the retriever's 8x8) holds most of its mass on the
  key cell over a flat floor, as a real teacher's attention would; it is pooled onto the
  retriever's grid by the same code as `vdr agree annotate` and written in the same files.
- the retriever is the tests' tiny random ColQwen2 (tests/tiny_models.py: width 64, 2 layers),
  trained with LoRA (r 16) twice under the same seed, data, steps, batch and learning rate
  (the paper's 1e-4): loss "global" and loss "global+cosine" (lambda 0.1, the paper's).
Both runs are scored on held-out pages and queries (each of the 64 colour pairs the key of one
test page): nDCG@5 by exact MaxSim over the test pages, and the grounding metric (the share of
the teacher's mass in the retriever's top 10% patches, and the cosine between the maps) from
`vdr.agree.report`. The untrained model is scored too. Prints a markdown table with the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tiny_models
from vdr.agree.annotate import Annotation, read_annotations, retriever_grid, write_annotation
from vdr.agree.data import Pair, load_pairs
from vdr.agree.downsample import downsample
from vdr.agree.report import grounding
from vdr.agree.train import TrainConfig, train
from vdr.encoders.colpali import ColPaliEncoder, resolve_checkpoint
from vdr.eval import query_metrics
from vdr.pages import Page

import tiny_models
from index_throughput import machine

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 40, 170),
    "orange": (250, 140, 20),
    "pink": (250, 150, 200),
    "brown": (120, 70, 30),
}
BOARD = 4  # cells per side
CELL = 56  # pixels: 2x2 Qwen tokens of 28 pixels, so the page is 224x224, an 8x8 token grid
FRAME = 5  # pixels of black frame around the key cell
TEACHER_GRID = 16  # the synthetic teacher's own grid, 4x4 per cell
TEACHER_KEY_MASS = 0.8  # share of the teacher's mass on the key cell; the rest spread evenly
SEED = 0


def key_pairs() -> list[tuple[str, str]]:
    return [(top, bottom) for top in COLOURS for bottom in COLOURS]


def page(key: tuple[str, str], rng: np.random.Generator) -> tuple[Image.Image, tuple[int, int]]:
    """A board with `key` in a framed cell at a random place; (image, key cell (row, col))."""
    image = Image.new("RGB", (BOARD * CELL, BOARD * CELL), "white")
    draw = ImageDraw.Draw(image)
    others = [pair for pair in key_pairs() if pair != key]
    where = (int(rng.integers(BOARD)), int(rng.integers(BOARD)))
    for row in range(BOARD):
        for col in range(BOARD):
            pair = key if (row, col) == where else others[rng.integers(len(others))]
            x, y = col * CELL, row * CELL
            draw.rectangle((x, y, x + CELL - 1, y + CELL // 2 - 1), fill=COLOURS[pair[0]])
            draw.rectangle((x, y + CELL // 2, x + CELL - 1, y + CELL - 1), fill=COLOURS[pair[1]])
    x, y = where[1] * CELL, where[0] * CELL
    draw.rectangle((x, y, x + CELL - 1, y + CELL - 1), outline="black", width=FRAME)
    return image, where


def image_name(number: int) -> str:
    return f"page{number:04d}.png"


def teacher_map(where: tuple[int, int]) -> np.ndarray:
    """[16, 16]: TEACHER_KEY_MASS on the key cell's 4x4 block, the rest spread evenly."""
    per_cell = TEACHER_GRID // BOARD
    out = np.full((TEACHER_GRID, TEACHER_GRID), (1 - TEACHER_KEY_MASS) / TEACHER_GRID**2)
    rows = slice(where[0] * per_cell, (where[0] + 1) * per_cell)
    cols = slice(where[1] * per_cell, (where[1] + 1) * per_cell)
    out[rows, cols] += TEACHER_KEY_MASS / per_cell**2
    return out.astype(np.float32)


def make_split(
    folder: Path, keys: list[tuple[str, str]], rng: np.random.Generator, grid_of
) -> Path:
    """Pages of `keys` as PNGs, a {query, image} JSONL and their annotations; returns the JSONL."""
    folder.mkdir(parents=True)
    lines, wheres = [], []
    for number, key in enumerate(keys):
        image, where = page(key, rng)
        image.save(folder / image_name(number))
        lines.append(json.dumps({"query": f"{key[0]} over {key[1]}", "image": image_name(number)}))
        wheres.append(where)
    data = folder / "pairs.jsonl"
    data.write_text("\n".join(lines) + "\n")
    for pair, where in zip(load_pairs(data), wheres, strict=True):
        raw = teacher_map(where)
        target = downsample(raw, grid_of(pair.image()))
        write_annotation(folder / "annotations", Annotation(pair, raw, target))
    return data


def ndcg5(encoder: ColPaliEncoder, pairs: list[Pair]) -> float:
    """Mean nDCG@5 of each pair's query over all the pairs' pages (its own page relevant)."""
    images = [pair.image() for pair in pairs]
    pages = encoder.encode_pages([Page(image=i, words=(), size=i.size) for i in images])
    queries = encoder.encode_queries([pair.query for pair in pairs])
    scores = np.array(
        [
            [float((q.scoring_vectors() @ p.vectors.T).max(axis=1).sum()) for p in pages]
            for q in queries
        ]
    )
    total = 0.0
    for number, row in enumerate(scores):
        ranking = [(str(i), 1) for i in np.argsort(-row, kind="stable")[:10]]
        total += query_metrics(ranking, {(str(number), 1): 1})["ndcg@5"]
    return total / len(pairs)


def score(model: str, test: Path) -> dict[str, float]:
    encoder = ColPaliEncoder(resolve_checkpoint(model), "cpu", "fp32", batch_size=16)
    report = grounding(encoder, read_annotations(test.parent / "annotations"))
    return {
        "ndcg@5": ndcg5(encoder, load_pairs(test)),
        "top_share": report.top_share,
        "cosine": report.cosine,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--train-pages", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lambda", dest="lambda_", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--losses", nargs="+", default=["global", "global+cosine"])
    parser.add_argument(
        "--out", type=Path, help="keep the data and runs here (default: a temp dir)"
    )
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="agree-synthetic-"))
    retriever = tiny_models.build_tiny_model("colqwen2", root / "retriever")
    grid_of = retriever_grid(str(retriever))
    rng = np.random.default_rng(SEED)
    all_keys = key_pairs()
    train_keys = [all_keys[i] for i in rng.integers(len(all_keys), size=args.train_pages)]
    train_data = make_split(root / "train", train_keys, rng, grid_of)
    test_data = make_split(root / "test", all_keys, rng, grid_of)

    rows = {"untrained": {**score(str(retriever), test_data), "seconds": 0.0}}
    for loss in args.losses:
        config = TrainConfig(
            retriever=str(retriever),
            data=str(train_data),
            annotations=str(root / "train" / "annotations"),
            output_dir=str(root / loss.replace("+", "-")),
            loss=loss,
            lambda_=args.lambda_,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_steps=args.steps // 20,
            epochs=-(-args.steps * args.batch_size // args.train_pages),
            max_steps=args.steps,
            seed=SEED,
            lora_r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            save_every=args.steps,
            device="cpu",
            dtype="fp32",
        )
        started = time.perf_counter()
        result = train(config, progress=True)
        seconds = time.perf_counter() - started
        rows[loss] = {**score(str(result.adapter), test_data), "seconds": seconds}

    print(
        f"\n{args.train_pages} training pages, {args.steps} steps of {args.batch_size}, "
        f"lambda {args.lambda_}, lr {args.learning_rate}; 64 test pages and queries; "
        f"{datetime.date.today()}, {machine()}\n"
    )
    print("| retriever | nDCG@5 | teacher mass in top 10% | map cosine | train s |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['ndcg@5']:.3f} | {row['top_share']:.3f} | {row['cosine']:.3f} "
            f"| {row['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
