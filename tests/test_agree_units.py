"""AGREE's pure pieces against hand-computed values: downsampling, the local losses, the student
map and the grounding figures; the data formats and the training config."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vdr.agree.data import Pair, load_pairs
from vdr.agree.downsample import downsample
from vdr.agree.losses import cosine_loss, hardest_mean, kl_loss, student_map, topk_loss
from vdr.agree.report import agreement
from vdr.agree.train import load_config
from vdr.errors import VdrError

from conftest import REPO, SAMPLES


def hot(shape: tuple[int, int], row: int, col: int) -> np.ndarray:
    grid = np.full(shape, 1e-3)
    grid[row, col] = 1.0
    return grid


def peaks(pooled: np.ndarray) -> set[tuple[int, int]]:
    return {(int(r), int(c)) for r, c in zip(*np.nonzero(pooled == pooled.max()), strict=True)}


@pytest.mark.parametrize(
    ("teacher", "grid", "patch", "expected"),
    [
        # 6x6 -> 3x3: windows of 2 rows/cols; teacher (4, 1) lies in cell (2, 0)
        ((6, 6), (3, 3), (4, 1), {(2, 0)}),
        ((6, 6), (3, 3), (0, 5), {(0, 2)}),
        # 7x5 -> 3x2: row windows [0,3) [2,5) [4,7), column windows [0,3) [2,5)
        ((7, 5), (3, 2), (6, 0), {(2, 0)}),
        ((7, 5), (3, 2), (1, 4), {(0, 1)}),
        # row 2 and column 2 are shared by two windows each: the peak shows in all four cells
        ((7, 5), (3, 2), (2, 2), {(0, 0), (0, 1), (1, 0), (1, 1)}),
        # 9x6 -> 4x4 (Qwen-like non-square): rows [0,3) [2,5) [4,7) [6,9), columns 1.5 wide
        ((9, 6), (4, 4), (8, 3), {(3, 2)}),
        # a grid finer than the teacher's (ColPali's 32x32 from a small page): cells repeat
        ((2, 2), (4, 4), (1, 0), {(2, 0), (2, 1), (3, 0), (3, 1)}),
    ],
)
def test_a_hot_teacher_patch_lands_in_the_right_retriever_patch(
    teacher: tuple[int, int],
    grid: tuple[int, int],
    patch: tuple[int, int],
    expected: set[tuple[int, int]],
) -> None:
    pooled = downsample(hot(teacher, *patch), grid)
    assert pooled.shape == grid and pooled.dtype == np.float32
    assert peaks(pooled) == expected
    assert pooled.sum() == pytest.approx(1.0)


def test_downsampling_keeps_peaks_that_averaging_would_flatten() -> None:
    teacher = np.zeros((8, 8))
    teacher[5, 2] = 1.0
    pooled = downsample(teacher, (2, 2))
    assert pooled[1, 0] == pytest.approx(1.0)  # max pooling: all the mass stays on one cell
    assert downsample(np.zeros((3, 3)), (2, 2)).tolist() == [[0.25, 0.25], [0.25, 0.25]]


def test_student_map_is_the_mean_over_query_tokens_of_dot_products() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    patches = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, -1.0]])
    assert student_map(query, patches).tolist() == [0.5, 0.5, -0.5]


def test_cosine_loss_by_hand() -> None:
    # cos([1, 0, 0], [0.5, 0.5, 0]) = 0.5 / (1 * sqrt(0.5)) = 0.70711
    loss = cosine_loss(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.5, 0.5, 0.0]))
    assert float(loss) == pytest.approx(1 - math.sqrt(0.5), abs=1e-6)
    same = cosine_loss(torch.tensor([2.0, 4.0]), torch.tensor([0.1, 0.2]))
    assert float(same) == pytest.approx(0.0, abs=1e-6)  # scale does not matter


def test_kl_loss_by_hand() -> None:
    # student [0, ln 3] at temperature 1: softmax [1/4, 3/4]; teacher [1/2, 1/2]:
    # KL = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3)
    expected = 0.5 * math.log(4 / 3)
    target = torch.tensor([0.5, 0.5])
    assert float(kl_loss(torch.tensor([0.0, math.log(3)]), target, 1.0)) == pytest.approx(expected)
    # the temperature divides the student's scores
    halved = torch.tensor([0.0, math.log(3) / 2])
    assert float(kl_loss(halved, target, 0.5)) == pytest.approx(expected)
    # a patch without teacher mass adds nothing (not nan): KL([1, 0] || [1/2, 1/2]) = ln 2
    no_mass = kl_loss(torch.zeros(2), torch.tensor([1.0, 0.0]), 1.0)
    assert float(no_mass) == pytest.approx(math.log(2))


def test_topk_loss_by_hand() -> None:
    # exp(student) = [1, 2, 3, 4] (sum 10); the teacher ranks patches 3 > 2 > 1 > 0
    student = torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    target = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert float(topk_loss(student, target, 0.5, 1.0)) == pytest.approx(-math.log(7 / 10))
    # 10% of 4 patches rounds to 0: at least one positive, the teacher's top patch
    assert float(topk_loss(student, target, 0.1, 1.0)) == pytest.approx(-math.log(4 / 10))


def test_selective_supervision_keeps_the_pairs_that_disagree_most() -> None:
    losses = torch.tensor([0.1, 0.9, 0.5, 0.3])
    assert float(hardest_mean(losses, 0.25)) == pytest.approx(0.9)
    assert float(hardest_mean(losses, 0.5)) == pytest.approx(0.7)
    assert float(hardest_mean(losses, 1.0)) == pytest.approx(0.45)
    assert float(hardest_mean(losses, 0.01)) == pytest.approx(0.9)  # at least one pair


def test_grounding_figures_by_hand() -> None:
    target = np.array([[0.0, 0.6], [0.4, 0.0]])
    share, cosine = agreement(np.array([[0.1, 0.9], [0.2, 0.0]]), target, 0.25)
    assert share == pytest.approx(0.6)  # the top patch holds 0.6 of the teacher's mass
    expected = (0.9 * 0.6 + 0.2 * 0.4) / (math.sqrt(0.86) * math.sqrt(0.52))
    assert cosine == pytest.approx(expected)
    assert agreement(np.array([[0.1, 0.9], [0.2, 0.0]]), target, 0.5)[0] == pytest.approx(1.0)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_folder_with_pdfs_and_graded_qrels(tmp_path: Path) -> None:
    (tmp_path / "pdfs").symlink_to(SAMPLES)
    write_lines(
        tmp_path / "queries.jsonl",
        [json.dumps({"qid": "q1", "text": "solar output"}), json.dumps({"_id": "q2", "text": "x"})],
    )
    write_lines(
        tmp_path / "qrels.tsv",
        ["q1\tsolar_report\t2\t2", "q1\tbike_maintenance\t1\t1", "q2\tsolar_report\t1\t0"],
    )
    pairs = load_pairs(tmp_path)
    assert [(p.query, p.source.name, p.page) for p in pairs] == [
        ("solar output", "solar_report.pdf", 2),
        ("solar output", "bike_maintenance.pdf", 1),
    ]  # grade 0 is not a positive
    assert pairs[0].image().mode == "RGB"
    assert len({p.id for p in pairs}) == 2


def test_beir_folder_with_images_and_a_header(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 30), "red").save(tmp_path / "images" / "c7.png")
    write_lines(tmp_path / "queries.jsonl", [json.dumps({"_id": "a", "text": "red page"})])
    write_lines(tmp_path / "qrels.tsv", ["query-id\tcorpus-id\tscore", "a\tc7\t1"])
    (pair,) = load_pairs(tmp_path)
    assert pair.query == "red page" and pair.page is None and pair.image().size == (40, 30)
    write_lines(tmp_path / "qrels.tsv", ["a\tc8\t1"])
    with pytest.raises(VdrError, match="c8"):
        load_pairs(tmp_path)


def test_jsonl_pairs_with_images_and_pdf_pages(tmp_path: Path) -> None:
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    rows = [
        {"query": "first", "image": "a.png"},
        {"query": "second", "image": str(SAMPLES / "solar_report.pdf"), "page": 2},
    ]
    pairs = load_pairs(write_lines(tmp_path / "pairs.jsonl", [json.dumps(r) for r in rows]))
    assert [(p.query, p.page) for p in pairs] == [("first", None), ("second", 2)]
    assert Pair.from_description(pairs[1].describe()) == pairs[1]
    write_lines(tmp_path / "bad.jsonl", [json.dumps({"query": "no image"})])
    with pytest.raises(VdrError, match="line 1"):
        load_pairs(tmp_path / "bad.jsonl")


def test_config_from_toml_and_yaml(tmp_path: Path) -> None:
    toml = write_lines(
        tmp_path / "run.toml",
        ['retriever = "r"', 'data = "d"', 'output_dir = "o"', 'annotations = "a"', "lambda = 0.2"],
    )
    yaml = write_lines(
        tmp_path / "run.yaml",
        ["retriever: r", "data: d", "output_dir: o", "annotations: a", "lambda: 0.2"],
    )
    assert load_config(toml) == load_config(yaml)
    assert load_config(toml).lambda_ == 0.2 and load_config(toml).loss == "global+cosine"
    write_lines(
        tmp_path / "typo.toml", ['retriever = "r"', 'data = "d"', 'output_dir = "o"', "lamda = 1"]
    )
    with pytest.raises(VdrError, match="lamda"):
        load_config(tmp_path / "typo.toml")
    write_lines(tmp_path / "local.toml", ['retriever = "r"', 'data = "d"', 'output_dir = "o"'])
    with pytest.raises(VdrError, match="annotations"):
        load_config(tmp_path / "local.toml")  # the default loss has a local term


def test_the_readme_gpu_recipe_config_loads(tmp_path: Path) -> None:
    (block,) = re.findall(r"```toml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    config = load_config(write_lines(tmp_path / "agree-qwen25.toml", [block]))
    assert (config.loss, config.lambda_, config.batch_size, config.epochs) == (
        "global+cosine",
        0.1,
        128,
        3,
    )
