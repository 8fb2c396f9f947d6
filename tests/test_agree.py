"""AGREE end to end on tiny random models built offline: a Qwen2-VL teacher annotates pairs, a
ColQwen2 retriever trains 20 steps on CPU with each loss, and the result indexes and reports."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from vdr.agree.annotate import read_annotations
from vdr.agree.teacher import Teacher
from vdr.agree.train import LOSSES, load_config, train
from vdr.cli import main
from vdr.encoders.colpali import ColPaliEncoder, resolve_checkpoint
from vdr.errors import VdrError
from vdr.pages import Page

import tiny_models
from conftest import SAMPLES

STEPS = 20
QUERIES = (
    "What is the total revenue in 2023?",
    "The chart compares the market share of the five largest companies.",
    "Which figure shows the energy consumption per country?",
    "The table lists the number of employees per department.",
    "Where is the warranty information in the user guide?",
    "Net income rose by twelve percent.",
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny teacher and retriever, six (query, page) pairs as JSONL, and their annotations
    made with the real command."""
    root = tmp_path_factory.mktemp("agree")
    paths = {
        "teacher": tiny_models.build_tiny_teacher(root / "teacher"),
        "retriever": tiny_models.build_tiny_model("colqwen2", root / "retriever"),
    }
    lines = []
    for number, query in enumerate(QUERIES):
        image = Image.new("RGB", (280 + 56 * number, 420), "white")  # grids of several shapes
        ImageDraw.Draw(image).rectangle((30 * number, 40, 30 * number + 90, 140), fill="navy")
        image.save(root / f"page{number}.png")
        lines.append(json.dumps({"query": query, "image": f"page{number}.png"}))
    paths["data"] = root / "pairs.jsonl"
    paths["data"].write_text("\n".join(lines) + "\n")
    paths["annotations"] = root / "annotations"
    assert annotate(paths) == {"annotated": len(QUERIES), "skipped": 0}
    return paths


def annotate_args(paths: dict[str, Path]) -> list[str]:
    args = ["agree", "annotate", "--teacher", str(paths["teacher"]), "--data", str(paths["data"])]
    args += ["--grid-from", str(paths["retriever"]), "--out", str(paths["annotations"])]
    return [*args, "--max-image-tokens", "64", "--batch-size", "4", "--device", "cpu"]


def annotate(paths: dict[str, Path]) -> dict[str, int]:
    """`vdr agree annotate` on the fixture's pairs: how many it annotated and skipped."""
    return json.loads(run_cli(annotate_args(paths)))


def run_cli(args: list[str]) -> str:
    """Run `vdr ARGS --json`, check it succeeded, return what it printed."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main([*args, "--json"]) == 0
    return buffer.getvalue()


def test_annotations_sit_on_the_retrievers_grid(tiny: dict[str, Path]) -> None:
    annotations = read_annotations(tiny["annotations"])
    assert len(annotations) == len(QUERIES)
    encoder = ColPaliEncoder(resolve_checkpoint(str(tiny["retriever"])), "cpu", "fp32")
    for annotation in annotations:
        image = annotation.pair.image()
        (page,) = encoder.encode_pages([Page(image=image, words=(), size=image.size)])
        assert annotation.target.shape == page.grid
        assert annotation.target.sum() == pytest.approx(1.0)
        assert (annotation.teacher > 0).all() and annotation.teacher.sum() < 1  # attention mass


def test_annotating_resumes_and_refuses_other_settings(
    tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert annotate(tiny) == {"annotated": 0, "skipped": len(QUERIES)}
    victim = sorted((tiny["annotations"] / "maps").glob("*.npz"))[2]
    before = np.load(victim)["teacher"]
    victim.unlink()
    assert annotate(tiny) == {"annotated": 1, "skipped": len(QUERIES) - 1}
    assert np.allclose(np.load(victim)["teacher"], before, atol=1e-6)  # same in a batch of 1
    args = annotate_args(tiny)
    assert main([*args, "--layers", "0"]) == 1
    assert "layers differ" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_teacher_map_is_the_mean_of_the_models_own_attentions(
    tiny: dict[str, Path], tmp_path: Path, family: str
) -> None:
    """The hooked reduction equals the attentions transformers returns, averaged by hand over
    the chosen layers, heads and query tokens; for both teacher families (the paper's is
    Qwen2.5-VL)."""
    if family == "qwen2-vl":
        folder = tiny["teacher"]
    else:
        folder = tiny_models.build_tiny_teacher(tmp_path / "teacher", qwen2_5=True)
    image = Image.new("RGB", (300, 250), "white")
    query = QUERIES[0]
    teacher = Teacher(str(folder), layers=[-1], heads=[0, 2], max_image_tokens=64)
    (mapped,) = teacher.maps([query], [image])
    batch = teacher.processor(
        text=[teacher.settings()["prompt"].format(query=query)], images=[image], return_tensors="pt"
    )
    with torch.inference_mode():
        attentions = teacher.model(**batch, output_attentions=True).attentions
    ids = batch["input_ids"][0].tolist()
    tokenizer = teacher.processor.tokenizer
    start = ids.index(tokenizer.convert_tokens_to_ids("<|vision_end|>")) + 1
    end = ids.index(tokenizer.convert_tokens_to_ids("<|im_end|>"), start)
    assert end - start == len(tokenizer(query)["input_ids"])
    columns = [
        i for i, t in enumerate(ids) if t == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ]
    by_hand = attentions[-1][0, [0, 2]][:, start:end][:, :, columns].mean(dim=(0, 1))
    assert mapped.size == len(columns)
    assert np.allclose(mapped.ravel(), by_hand.numpy(), atol=1e-6)
    # all layers and heads: the mean of the per-layer maps
    everything = Teacher(str(folder), max_image_tokens=64).maps([query], [image])[0]
    per_layer = [
        Teacher(str(folder), layers=[n], max_image_tokens=64).maps([query], [image])[0]
        for n in (0, 1)
    ]
    assert np.allclose(everything, np.mean(per_layer, axis=0), atol=1e-6)
    with pytest.raises(VdrError, match="no tokens"):
        teacher.maps([""], [image])


def config_file(tiny: dict[str, Path], out: Path, loss: str, **overrides: object) -> Path:
    values = {
        "retriever": str(tiny["retriever"]),
        "data": str(tiny["data"]),
        "annotations": str(tiny["annotations"]),
        "output_dir": str(out),
        "loss": loss,
        "batch_size": 3,
        "epochs": 10,  # 2 steps an epoch: 20 steps
        "learning_rate": 1e-3,
        "lora_r": 4,
        "lora_alpha": 8,
        "save_every": 10,
        "device": "cpu",
        **overrides,
    }
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = out.with_suffix(".toml")
    path.write_text("\n".join(lines) + "\n")
    return path


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("loss", LOSSES)
def test_twenty_steps_with_each_loss(tiny: dict[str, Path], tmp_path: Path, loss: str) -> None:
    out = tmp_path / "run"
    # global+topk also runs with gradient checkpointing (the GPU recipe's memory saver),
    # global+kl with selective supervision (the local loss on the worse half of each batch)
    extra = {
        "global+topk": {"gradient_checkpointing": True},
        "global+kl": {"selective_fraction": 0.5},
    }.get(loss, {})
    summary = json.loads(run_cli(["train", str(config_file(tiny, out, loss, **extra)), "--quiet"]))
    assert summary["step"] == STEPS and summary["resumed_from"] == 0
    lines = log_lines(out)
    assert [line["step"] for line in lines] == list(range(1, STEPS + 1))
    terms = ["global", "loss"] + ([] if loss == "global" else ["local"])
    for line in lines:
        assert set(terms) <= set(line) and all(math.isfinite(line[t]) for t in terms)
    if loss == "global":
        assert "local" not in lines[0]
    else:
        assert lines[-1]["loss"] == pytest.approx(lines[-1]["global"] + 0.1 * lines[-1]["local"])
    # the adapter changed: LoRA's B starts at zero and is not zero any more
    weights = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert any(float(w.abs().max()) > 0 for name, w in weights.items() if "lora_B" in name)


def test_trained_adapter_indexes_and_reports(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(load_config(config_file(tiny, out, "global+cosine")), progress=False)
    adapter = str(result.adapter)
    index = ["--index", str(tmp_path / "index"), "--model", adapter, "--device", "cpu"]
    assert json.loads(run_cli(["index", str(SAMPLES), *index, "--quiet"]))["pages_in_index"] == 6
    hits = json.loads(run_cli(["search", "solar output", *index, "-k", "2"]))
    assert len(hits) == 2
    evaluation = tmp_path / "set"  # `vdr eval` scores it like any other model
    (evaluation / "pdfs").mkdir(parents=True)
    (evaluation / "pdfs" / "solar_report.pdf").symlink_to(SAMPLES / "solar_report.pdf")
    (evaluation / "queries.jsonl").write_text('{"qid": "q1", "text": "solar output"}\n')
    (evaluation / "qrels.tsv").write_text("q1\tsolar_report\t1\t2\n")
    # eval refuses an index holding documents outside its set, so it gets an index of its own
    own = ["--index", str(tmp_path / "eval-index"), "--model", adapter, "--device", "cpu"]
    scored = json.loads(run_cli(["eval", str(evaluation), *own]))
    assert scored["n"] == 1 and 0 < scored["ndcg@10"] <= 1  # the set's page is in the index
    # the adapter is applied: its page vectors differ from the base model's
    image = Image.new("RGB", (300, 300), "white")
    page = Page(image=image, words=(), size=(300, 300))
    trained = ColPaliEncoder(resolve_checkpoint(adapter), "cpu", "fp32").encode_pages([page])
    base = ColPaliEncoder(resolve_checkpoint(str(tiny["retriever"])), "cpu", "fp32")
    assert not np.allclose(trained[0].vectors, base.encode_pages([page])[0].vectors, atol=1e-4)
    annotations = ["--annotations", str(tiny["annotations"]), "--device", "cpu"]
    report = json.loads(run_cli(["agree", "report", "--model", adapter, *annotations]))
    assert report["pairs"] == len(QUERIES)
    assert 0 <= report["top_share"] <= 1 and -1 <= report["cosine"] <= 1


def test_resume_continues_from_the_saved_step(tiny: dict[str, Path], tmp_path: Path) -> None:
    """Stopped at step 10 and run again, training picks up at step 11 and ends where an
    uninterrupted run ends (optimizer, schedule, data order and dropout RNG restored)."""
    straight = tmp_path / "straight"
    train(load_config(config_file(tiny, straight, "global+kl")), progress=False)
    stopped = tmp_path / "stopped"
    config = load_config(config_file(tiny, stopped, "global+kl", max_steps=10))
    first = train(config, progress=False)
    assert (first.started_at, first.step) == (0, 10)
    second = train(dataclasses.replace(config, max_steps=0), progress=False)
    assert (second.started_at, second.step) == (10, STEPS)
    assert [line["step"] for line in log_lines(stopped)] == list(range(1, STEPS + 1))
    assert log_lines(stopped)[-1]["loss"] == pytest.approx(log_lines(straight)[-1]["loss"])
    a = load_file(str(straight / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(stopped / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(VdrError, match="another config"):
        train(dataclasses.replace(config, learning_rate=0.5), progress=False)


def test_pairs_without_annotations_are_named(tiny: dict[str, Path], tmp_path: Path) -> None:
    extra = tmp_path / "more.jsonl"  # the same pairs and one more, on the same page image
    extra.write_text(tiny["data"].read_text() + json.dumps({"query": "new", "image": "x.png"}))
    for number in range(len(QUERIES)):
        (tmp_path / f"page{number}.png").symlink_to(tiny["data"].parent / f"page{number}.png")
    (tmp_path / "x.png").symlink_to(tiny["data"].parent / "page0.png")
    config = load_config(config_file(tiny, tmp_path / "run", "global+cosine"))
    with pytest.raises(VdrError, match="1 of 7 pairs have no annotation"):
        train(dataclasses.replace(config, data=str(extra)), progress=False)
    # the global loss alone needs none
    alone = dataclasses.replace(config, loss="global", annotations=None, data=str(extra))
    assert train(dataclasses.replace(alone, max_steps=1), progress=False).step == 1
