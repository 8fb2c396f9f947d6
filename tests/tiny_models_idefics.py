"""Tiny, randomly initialised Idefics3-style ColPali checkpoints, built offline for tests.

No model hub is reachable from the tests, so these builders make, from nothing, a directory laid
out like a real hub checkpoint (``config.json``, ``model.safetensors``, ``tokenizer.json`` +
``tokenizer_config.json``, ``preprocessor_config.json`` + ``processor_config.json``) that the
production loaders open with ``ColIdefics3.from_pretrained(dir)`` /
``ColIdefics3Processor.from_pretrained(dir)`` (and the ColModernVBert pair).

Both families share the Idefics3 image pipeline of the real checkpoints, only shrunk:

* a page is resized so that its longest edge is ``LONGEST_EDGE`` (256 px), its sides are rounded
  up to multiples of ``TILE`` (64 px) and it is cut into ``rows x cols`` tiles (at most 4 x 4,
  as with ColSmol's 2048 / 512), followed by one global tile (the whole page squashed to 64 x 64);
* the vision encoder sees each 64 x 64 tile as 16 x 16 patches of 4 px, and the pixel shuffle
  (factor 4, as in the real models) turns them into 4 x 4 = ``IMAGE_SEQ_LEN`` (16) tokens per tile;
* a portrait A4-like page (600 x 800) becomes 4 x 3 tiles + 1 global tile = 208 image tokens, and
  no page can exceed (16 + 1) x 16 = 272 image tokens, so CPU forward passes take milliseconds.

The weights are random but seeded (``SEED``) and the tokenizer is a byte-level BPE trained on the
spot on the sentences below, so two builds of a family give byte-identical weights and tokenizer.

transformers and colpali-engine are imported inside the builders: pytest imports this module to
collect doctests, and should not pay for them there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch import nn

if TYPE_CHECKING:
    from transformers import Idefics3ImageProcessor, PreTrainedModel, PreTrainedTokenizerBase

FAMILIES = ("colidefics3", "colmodernvbert")

SEED = 0
TILE = 64
"""Side of a tile in pixels: the image processor's ``max_image_size``, the vision ``image_size``."""
PATCH = 4
"""Vision patch size: a tile is (TILE / PATCH)^2 = 256 patches."""
SHUFFLE = 4
"""Pixel-shuffle (scale) factor, as in ColSmol and ColModernVBert."""
IMAGE_SEQ_LEN = (TILE // PATCH // SHUFFLE) ** 2
"""Tokens per tile after the pixel shuffle: a 4 x 4 grid."""
LONGEST_EDGE = 4 * TILE
"""A page's longest edge after resizing: pages split into at most 4 x 4 tiles."""
BPE_VOCAB = 1000
"""Vocabulary size of the trained BPE, special tokens included."""

IMAGE_TOKENS = (
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)),
)
"""The tokens Idefics3Processor writes around and inside an image (it knows 6 x 6 tiles)."""

_SENTENCES = (
    "The quarterly report shows revenue growth in every region.",
    "Figure 3 compares the accuracy of the two retrieval models.",
    "Table 2 lists the number of pages in each document collection.",
    "The invoice is due thirty days after the date of delivery.",
    "Please sign the form and return it to the human resources office.",
    "The chart on page four shows the monthly energy consumption.",
    "Our method retrieves relevant pages from scanned documents.",
    "The board approved the budget for the next fiscal year.",
    "Section 5 describes the safety procedures for the laboratory.",
    "The map shows the train lines that connect the northern towns.",
    "Each query is encoded into a small set of token embeddings.",
    "The patient should take two tablets every morning with water.",
    "The contract ends on the last day of December.",
    "Net income rose by twelve percent compared with last year.",
    "The diagram explains how the cooling system moves heat outside.",
    "A summary of the results is given in the appendix.",
    "The museum is open from nine in the morning until six in the evening.",
    "The recipe needs flour, sugar, butter, eggs and a pinch of salt.",
    "Students must submit the assignment before Friday at noon.",
    "The warranty covers parts and labour for two years.",
    "Where is the table with the population of each city?",
    "What was the total revenue in the third quarter?",
    "Which model has the highest score on the benchmark?",
    "How many employees work in the research department?",
    "When does the new policy come into force?",
    "Who signed the agreement on behalf of the company?",
    "What does the pie chart say about market share?",
    "Find the page that describes the installation steps.",
)
_SUBJECTS = (
    "The report",
    "This page",
    "The scanned letter",
    "Our team",
    "The manual",
    "The new policy",
    "The slide",
    "The research paper",
    "The annual budget",
    "The city council",
    "The engineer",
    "The first chapter",
)
_PREDICATES = (
    "describes the results of the survey.",
    "contains a large table of prices.",
    "explains the main idea in simple words.",
    "shows a bar chart of sales by month.",
    "was printed on a sheet of white paper.",
    "includes a map of the river and the bridge.",
    "gives the total cost of the project.",
    "lists the names of the committee members.",
    "presents a figure with three curves.",
    "mentions the date of the next meeting.",
    "summarises the history of the factory.",
    "answers the most common questions.",
    "compares the old design with the new one.",
    "reports the temperature measured each day.",
    "outlines the plan for the coming year.",
    "describes how documents are indexed and searched.",
    "has a footnote about the data sources.",
    "refers to the picture at the top of the page.",
    "records the votes of every member.",
    "highlights the key numbers in bold.",
    "ends with a short conclusion and a list of references.",
    "starts with an introduction to the problem.",
)


def _corpus() -> list[str]:
    """A few hundred English sentences: the hand-written ones plus every subject/predicate pair."""
    return list(_SENTENCES) + [f"{s} {p}" for s in _SUBJECTS for p in _PREDICATES]


def _train_bpe(special_tokens: list[str]) -> Tokenizer:
    """A byte-level BPE (the SmolLM2 / ModernBERT kind) trained on `_corpus`.

    The special tokens come first (ids 0..n-1); the tokenizer never splits them.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def _image_processor() -> Idefics3ImageProcessor:
    """The Idefics3 image processor of both families, with 64 px tiles and 256 px pages."""
    from transformers import Idefics3ImageProcessor

    return Idefics3ImageProcessor(
        do_image_splitting=True,
        size={"longest_edge": LONGEST_EDGE},
        max_image_size={"longest_edge": TILE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def _save_processor_files(
    out_dir: Path, tokenizer: PreTrainedTokenizerBase, processor_class: str
) -> None:
    """Tokenizer files, ``preprocessor_config.json`` and a ``processor_config.json`` holding the
    processor's own arguments, as checkpoints on the hub carry them."""
    tokenizer.save_pretrained(out_dir)
    _image_processor().save_pretrained(out_dir)
    config = {"image_seq_len": IMAGE_SEQ_LEN, "processor_class": processor_class}
    (out_dir / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _save_model(model: PreTrainedModel, head: nn.Linear, pad_token_id: int, out_dir: Path) -> None:
    """Give the retrieval head a random bias and the PAD token a random embedding, then save.

    A fresh init leaves both at zero, which a trained checkpoint never has: the hidden state of a
    left-padding token is then exactly 0, and ColIdefics3 (which L2-normalises without a clamp)
    returns 0 / 0 = NaN there, NaN that multiplying by the attention mask does not remove.
    """
    with torch.no_grad():
        nn.init.normal_(head.bias, std=0.02)
        nn.init.normal_(model.get_input_embeddings().weight[pad_token_id], std=0.02)
    model.save_pretrained(out_dir)


def _vision_sizes() -> dict[str, int]:
    """A one-layer, 32-wide vision encoder reading 64 px tiles in 4 px patches."""
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": TILE,
        "patch_size": PATCH,
    }


def _build_colidefics3(out_dir: Path) -> None:
    """ColIdefics3 (ColSmol's architecture): SigLIP-style vision tower + 2-layer Llama decoder.

    The tokenizer mimics SmolLM2's: a GPT-2 byte-level BPE with ``<|im_start|>`` as BOS (written
    by the prompt itself, never added), ``<end_of_utterance>`` as EOS and ``<|im_end|>`` as PAD.
    """
    from colpali_engine.models import ColIdefics3
    from transformers import GPT2Tokenizer, Idefics3Config, LlamaConfig
    from transformers.models.idefics3 import Idefics3VisionConfig

    core = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    extra = ["<end_of_utterance>", *IMAGE_TOKENS]
    tokenizer = GPT2Tokenizer(
        tokenizer_object=_train_bpe(core + extra),
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        extra_special_tokens=extra,
    )
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = Idefics3Config(
        text_config=text_config.to_dict(),
        vision_config=Idefics3VisionConfig(**_vision_sizes()).to_dict(),
        scale_factor=SHUFFLE,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    model = ColIdefics3(config)
    _save_model(model, model.linear, tokenizer.pad_token_id, out_dir)
    _save_processor_files(out_dir, tokenizer, "ColIdefics3Processor")


def _build_colmodernvbert(out_dir: Path) -> None:
    """ColModernVBert: SigLIP vision tower + 2-layer ModernBERT encoder (one global, one local
    attention layer, as ModernBERT alternates them).

    The tokenizer mimics ModernBERT's: a byte-level BPE whose post-processor wraps every text
    in ``[CLS] ... [SEP]``, ``[PAD]`` for padding, plus ``<|begin_of_text|>`` which the
    ColModernVBert page prompt starts with.
    """
    from colpali_engine.models import ColModernVBert
    from transformers import (
        ModernBertConfig,
        ModernVBertConfig,
        PreTrainedTokenizerFast,
        SiglipVisionConfig,
    )

    core = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    extra = ["<|begin_of_text|>", "<end_of_utterance>", *IMAGE_TOKENS]
    backend = _train_bpe(core + extra)
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(token, backend.token_to_id(token)) for token in ("[CLS]", "[SEP]")],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        extra_special_tokens=extra,
    )
    text_config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        cls_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        sep_token_id=tokenizer.sep_token_id,
    )
    vision_config = SiglipVisionConfig(**_vision_sizes(), vision_use_head=False)
    config = ModernVBertConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        pixel_shuffle_factor=SHUFFLE,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(SEED)
    model = ColModernVBert(config)
    _save_model(model, model.custom_text_proj, tokenizer.pad_token_id, out_dir)
    _save_processor_files(out_dir, tokenizer, "ColModernVBertProcessor")


def build_tiny_model(family: str, out_dir: Path) -> Path:
    """Build the tiny checkpoint of `family` (one of `FAMILIES`) into `out_dir`, return `out_dir`.

    The directory loads with the family's ``from_pretrained`` (model and processor) like a
    checkpoint downloaded from the hub; building takes well under a second after imports.
    """
    builders = {"colidefics3": _build_colidefics3, "colmodernvbert": _build_colmodernvbert}
    if family not in builders:
        raise ValueError(f"unknown family {family!r}, expected one of {FAMILIES}")
    out_dir.mkdir(parents=True, exist_ok=True)
    builders[family](out_dir)
    return out_dir
