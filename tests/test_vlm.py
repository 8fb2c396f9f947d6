"""ColPali-family encoders on tiny random checkpoints built offline, one per family."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vdr import Index
from vdr.cli import main
from vdr.encoders import load_encoder
from vdr.encoders.base import QueryEmbedding
from vdr.encoders.colpali import ColPaliEncoder, MissingWeights
from vdr.errors import UnknownModel
from vdr.heatmap import similarity_maps
from vdr.pages import Page

import tiny_models
import tiny_models_idefics
from conftest import REPO

BUILDERS: dict[str, Callable[[str, Path], Path]] = {
    **dict.fromkeys(tiny_models.FAMILIES, tiny_models.build_tiny_model),
    **dict.fromkeys(tiny_models_idefics.FAMILIES, tiny_models_idefics.build_tiny_model),
}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The checkpoint directory of a family's tiny model, built once per session."""
    root = tmp_path_factory.mktemp("tiny")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = BUILDERS[family](family, root / family.replace(".", "_"))
        return built[family]

    return get


def encoder_for(folder: Path) -> ColPaliEncoder:
    encoder = load_encoder(str(folder), "cpu", "fp32", 4)
    assert isinstance(encoder, ColPaliEncoder)
    return encoder


def pages_of_different_sizes() -> list[Page]:
    """Four pages: portrait, landscape, a long strip and a small square, with some content."""
    pages = []
    for number, (width, height) in enumerate([(600, 800), (800, 600), (900, 300), (250, 250)]):
        image = Image.new("RGB", (width, height), "white")
        image.paste((40 * number, 90, 200), (width // 4, height // 4, width // 2, height // 2))
        pages.append(Page(image=image, words=(), size=(width * 0.75, height * 0.75)))
    return pages


@pytest.mark.parametrize("family", BUILDERS)
def test_whole_cli_with_a_tiny_model(
    family: str, tiny: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tiny(family))
    index_dir = tmp_path / "index"
    common = ["--index", str(index_dir), "--model", model, "--device", "cpu"]
    assert main(["index", str(REPO / "samples" / "pdfs"), *common, "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pages_in_index"] == 6

    assert main(["search", "quarterly generation table", *common, "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and all(set(h) >= {"page_id", "doc_path", "page", "score"} for h in hits)

    heatmap = tmp_path / "map.png"
    page_id = hits[0]["page_id"]
    assert (
        main(
            [
                "heatmap",
                "generation table",
                "--page",
                page_id,
                *common,
                "-o",
                str(heatmap),
                "--json",
            ]
        )
        == 0
    )
    drawn = json.loads(capsys.readouterr().out)
    with Index(index_dir) as index:
        page = index.page(page_id)
        assert index.model == model and json.loads((index_dir / "vdr.json").read_text())[
            "settings"
        ] == {"family": family}
    rows, cols = page.embedding.grid
    assert drawn["grid"] == [rows, cols]
    # One vector per patch, covering the model's whole grid.
    assert sorted(page.embedding.patch_index) == list(range(rows * cols))
    with Image.open(heatmap) as image:
        assert image.format == "PNG"

    set_dir = tmp_path / "set"
    shutil.copytree(REPO / "samples" / "pdfs", set_dir / "pdfs")
    (set_dir / "queries.jsonl").write_text(
        '{"qid": "q1", "text": "brake pads", "type": "visual"}\n'
    )
    (set_dir / "qrels.tsv").write_text("q1\tbike_maintenance\t2\t2\n")
    assert main(["eval", str(set_dir), *common, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 1 and 0.0 <= result["ndcg@5"] <= 1.0


@pytest.mark.parametrize("family", BUILDERS)
def test_page_grid_orientation_follows_the_page(family: str, tiny: Callable[[str], Path]) -> None:
    encoder = encoder_for(tiny(family))
    portrait, landscape = encoder.encode_pages(pages_of_different_sizes()[:2])
    if family == "colpali":  # PaliGemma squashes every page onto one fixed square grid
        assert portrait.grid == landscape.grid and portrait.grid[0] == portrait.grid[1]
    else:
        assert portrait.grid[0] > portrait.grid[1] and landscape.grid[0] < landscape.grid[1]


@pytest.mark.parametrize("family", BUILDERS)
def test_embeddings_do_not_depend_on_batching(family: str, tiny: Callable[[str], Path]) -> None:
    encoder = encoder_for(tiny(family))
    pages = pages_of_different_sizes()
    batched = encoder.encode_pages(pages)
    for page, together in zip(pages, batched, strict=True):
        (alone,) = encoder.encode_pages([page])
        assert alone.grid == together.grid
        np.testing.assert_array_equal(alone.patch_index, together.patch_index)
        assert np.abs(alone.vectors - together.vectors).max() < 1e-4
    queries = [
        "brake pads",
        "a much longer query about the quarterly generation table",
        "x",
        "solar",
    ]
    for text, together in zip(queries, encoder.encode_queries(queries), strict=True):
        (alone,) = encoder.encode_queries([text])
        assert alone.tokens == together.tokens
        np.testing.assert_array_equal(alone.word_mask, together.word_mask)
        assert np.abs(alone.vectors - together.vectors).max() < 1e-4


@pytest.mark.parametrize("family", BUILDERS)
def test_query_word_tokens_exclude_augmentation_and_specials(
    family: str, tiny: Callable[[str], Path]
) -> None:
    encoder = encoder_for(tiny(family))
    (query,) = encoder.encode_queries(["brake pads"])
    words = [t for t, keep in zip(query.tokens, query.words(), strict=True) if keep]
    augmentation = encoder.processor.query_augmentation_token
    assert words and augmentation not in words
    assert not set(words) & set(encoder.processor.tokenizer.all_special_tokens)
    decoded = encoder.processor.tokenizer.convert_tokens_to_string(words).strip()
    assert decoded == "brake pads"
    # Augmentation tokens still count in scoring, as the model was trained.
    assert query.mask.sum() > query.words().sum()


def test_lora_adapter_gives_the_adapters_outputs(
    tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    from colpali_engine.models import ColQwen2
    from peft import PeftModel

    base_dir = tiny("colqwen2")
    adapter_dir = tiny_models.build_tiny_lora(base_dir, tmp_path / "adapter")
    adapted, base = encoder_for(adapter_dir), encoder_for(base_dir)
    assert adapted.name == str(adapter_dir) and adapted.family.name == "colqwen2"
    pages = pages_of_different_sizes()[:2]
    with_adapter = adapted.encode_pages(pages)
    without = base.encode_pages(pages)
    assert (
        max(np.abs(a.vectors - b.vectors).max() for a, b in zip(with_adapter, without, strict=True))
        > 1e-3
    )
    # The reference: peft's own model on the same inputs.
    reference = PeftModel.from_pretrained(
        ColQwen2.from_pretrained(str(base_dir)), str(adapter_dir)
    ).eval()
    batch = base.processor.process_images([p.image for p in pages])
    with torch.inference_mode():
        states = reference(**batch).float()
    image_token = base.processor.tokenizer.convert_tokens_to_ids(base.processor.image_token)
    for i, embedding in enumerate(with_adapter):
        expected = states[i][batch["input_ids"][i] == image_token].numpy()
        assert np.abs(embedding.vectors - expected).max() < 1e-4


def test_missing_weights_are_refused(tiny: Callable[[str], Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny("colqwen2"), broken)
    weights = load_file(broken / "model.safetensors")
    dropped = next(name for name in weights if "custom_text_proj" in name)
    del weights[dropped]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MissingWeights, match=r"lacks 1 weights .* refusing"):
        load_encoder(str(broken), "cpu", "fp32", 4)


def test_missing_checkpoint_says_how_to_pass_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UnknownModel, match="--model DIR"):
        load_encoder(str(tmp_path / "no-such-model"), "cpu", "fp32", 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownModel, match=r"has no config\.json"):
        load_encoder(str(tmp_path / "empty"), "cpu", "fp32", 4)


def test_an_index_refuses_another_model(tiny: Callable[[str], Path], tmp_path: Path) -> None:
    with Index(tmp_path / "index", model=str(tiny("colpali"))):
        pass
    with pytest.raises(Exception, match="was built with model"):
        Index(tmp_path / "index", model=str(tiny("colqwen2")))


@pytest.mark.parametrize("family", ["colqwen2", "colidefics3"])
def test_pooled_vlm_index_keeps_the_whole_grid_mapped(
    family: str, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    model = str(tiny(family))
    with Index(tmp_path / "pooled", model=model, device="cpu", pool_factor=3) as index:
        index.add([REPO / "samples" / "pdfs" / "solar_report.pdf"])
        hit = index.search("monthly output chart", k=1)[0]
        page = index.page(hit.page_id)
        maps = index.similarity("monthly output chart", hit.page_id)
    rows, cols = page.embedding.grid
    assert len(page.embedding.vectors) == rows * cols // 3
    assert maps.maps.shape[1:] == (rows, cols) and np.isfinite(maps.whole_query()).all()


@pytest.mark.parametrize("family", BUILDERS)
def test_patch_vectors_that_see_a_printed_word_sit_on_it(
    family: str, tiny: Callable[[str], Path]
) -> None:
    """Geometry and orientation: draw a word low on the right of a portrait page; the vectors
    that change most (vs the blank page) must sit on the patches covering the word."""
    from PIL import ImageDraw, ImageFont

    encoder = encoder_for(tiny(family))
    blank = Image.new("RGB", (600, 800), "white")
    printed = blank.copy()
    box = (360, 560, 560, 640)  # pixels: x0, y0, x1, y1
    draw = ImageDraw.Draw(printed)
    draw.rectangle(box, fill="black")  # a heavy "word": tiny random models see contrast, not text
    draw.text((370, 580), "VOLCANO", fill="white", font=ImageFont.load_default(size=40))
    plain, marked = encoder.encode_pages(
        [Page(image=img, words=(), size=(450.0, 600.0)) for img in (blank, printed)]
    )
    rows, cols = marked.grid
    change = np.linalg.norm(marked.vectors - plain.vectors, axis=1)
    patch = int(marked.patch_index[change.argmax()])
    row, col = divmod(patch, cols)
    # The patch's area on the page (as fractions) overlaps the word's box.
    assert row / rows < box[3] / 800 and (row + 1) / rows > box[1] / 800
    assert col / cols < box[2] / 600 and (col + 1) / cols > box[0] / 600
    # A heatmap for a query "word" that is that vector peaks on that very patch.
    probe = marked.vectors[change.argmax()][None]
    query = QueryEmbedding(probe, ("volcano",), np.ones(1, dtype=bool))
    maps = similarity_maps(query, marked)
    assert maps.maps.shape == (1, rows, cols)
    assert np.unravel_index(np.nanargmax(maps.whole_query()), (rows, cols)) == (row, col)
