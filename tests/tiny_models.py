"""Tiny, randomly initialised colpali-engine checkpoints for tests, built offline in seconds.

No model hub is reachable from the tests, so each builder writes a checkpoint directory laid
out as the hub's colpali checkpoints are (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json, preprocessor_config.json), with a tokenizer trained on the spot and
seeded random weights: a family always gives the same files, and the production loaders
(`ColQwen2.from_pretrained`, `ColQwen2Processor.from_pretrained`, ...) read it as a real one.

Sizes are chosen for speed on a CPU, not quality: language models of width 64 with 2 layers,
vision towers of width 32 with 2 layers, the real patch size (14) so that the processors'
arithmetic is the real one, and few image tokens per page (ColPali: a fixed 8x8 grid; Qwen: at
most 64 after the 2x2 merge). The embedding dimension stays 128: colpali-engine hard-codes it.

transformers, peft and colpali-engine are imported inside the builders: pytest imports this
module to collect doctests, and should not pay for them there.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

FAMILIES = ("colpali", "colqwen2", "colqwen2.5")

SEED = 1234
# Language model: width 64, 4 query heads of 16 (2 key/value heads), 2 layers.
TEXT_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
PATCH = 14  # the real models' patch size
PALI_GRID = 8  # ColPali pages are resized to 112x112 pixels: an 8x8 grid of patch tokens
QWEN_MERGE = 2  # Qwen merges 2x2 patches into one token
QWEN_PIXELS_PER_TOKEN = (PATCH * QWEN_MERGE) ** 2
QWEN_MIN_TOKENS, QWEN_MAX_TOKENS = 4, 64  # image tokens a Qwen page is resized to fit in

# Gemma's special tokens in their real order, and PaliGemma's location/segmentation tokens,
# which PaliGemmaProcessor adds to any tokenizer that lacks them.
GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
PALI_EXTRA_TOKENS = tuple(f"<loc{i:0>4}>" for i in range(1024)) + tuple(
    f"<seg{i:0>3}>" for i in range(128)
)
# Learned pieces; with the specials, 256 byte-fallback tokens, PaliGemma's extras and <image>:
# 1914 tokens, 1920 embedding rows.
GEMMA_BPE_TOKENS = 500
# Qwen2-VL's added tokens in their real order, after the BPE vocabulary.
QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN_BPE_TOKENS = 768  # 256 byte symbols and 512 merges; with the specials 782, 832 rows

# LoRA on the language model's projections and on the embedding head, as vidore's ColQwen2
# adapters have it (no vision module has "model" in its name).
LORA_TARGETS = (
    r"(.*(model).*(down_proj|gate_proj|up_proj|k_proj|q_proj|v_proj|o_proj).*$"
    r"|.*(custom_text_proj).*$)"
)
LORA_B_STD = 0.2  # peft starts B at zero (a no-op adapter); tests need one that changes outputs

_WRITTEN = """\
Describe the image.
The quarterly report shows revenue growth in every region.
Net income rose by twelve percent compared with last year.
The table lists the number of employees per department.
Figure 3 plots the temperature against the altitude of each station.
The invoice is due thirty days after the date of delivery.
Please sign the form and return it to the office before Friday.
The contract ends on the last day of the month.
Our results suggest that the new method is faster and more accurate.
The patient was given a low dose of the drug twice a day.
Section 2 describes the data, and section 3 the model.
The map shows the main roads, rivers and railway lines of the region.
Total assets were four million dollars at the end of the year.
The chart compares the market share of the five largest companies.
Click the button at the top of the page to download the file.
Water boils at one hundred degrees at sea level.
The committee will meet again next Tuesday at ten in the morning.
This manual explains how to install and maintain the pump.
The train leaves the station at half past seven.
Each page of the document contains a title, a summary and a table.
What is the total revenue in 2023?
Which figure shows the energy consumption per country?
How many patients took part in the clinical trial?
Where is the warranty information in the user guide?
Who signed the agreement on behalf of the company?
When was the building completed, and by whom?
"""
_SUBJECTS = ("The report", "This table", "A figure", "The summary", "Our team", "The page")
_VERBS = ("shows", "lists", "describes", "compares", "explains")
_OBJECTS = (
    "the annual budget",
    "the sales by region",
    "the results of the survey",
    "the safety instructions",
    "the price of energy",
    "the number of visitors",
    "the growth of the population",
    "the costs of the project",
)
_ENDINGS = (".", " in detail.", " for each month.", " since 2019.", " on page 4.")


def training_sentences() -> list[str]:
    """The tokenizers' training text: 26 written sentences plus every subject, verb, object and
    ending of a small phrase book combined (6 * 5 * 8 * 5 = 1200 sentences)."""
    made = [
        f"{subject} {verb} {obj}{ending}"
        for subject, verb, obj, ending in itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _ENDINGS)
    ]
    return _WRITTEN.splitlines() + made


def build_tiny_model(family: str, out_dir: Path) -> Path:
    """Build the tiny checkpoint of `family` (one of FAMILIES) in `out_dir`; returns `out_dir`.

    The directory holds config.json and model.safetensors (float32), tokenizer.json and
    tokenizer_config.json, and preprocessor_config.json: what `<Model>.from_pretrained` and
    `<Processor>.from_pretrained` read. The same family always gives the same weights and
    tokenizer, and the caller's torch random state is left as it was.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family '{family}'; expected one of {FAMILIES}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        if family == "colpali":
            _build_colpali(out_dir)
        else:
            _build_qwen(out_dir, qwen2_5=family == "colqwen2.5")
    return out_dir


def build_tiny_lora(base_dir: Path, out_dir: Path) -> Path:
    """Build a peft LoRA adapter for the tiny ColQwen2 at `base_dir` in `out_dir`; returns it.

    Laid out as vidore's ColQwen2 adapters are: adapter_config.json (its
    base_model_name_or_path is `base_dir` made absolute), adapter_model.safetensors, and the
    base's tokenizer and preprocessor files. Rank 4 on the language model's projections and on
    custom_text_proj, with B drawn from a seeded normal distribution instead of peft's zeros,
    so that the adapter measurably changes the embeddings.
    """
    from colpali_engine.models import ColQwen2, ColQwen2Processor
    from peft import LoraConfig, get_peft_model

    base_dir, out_dir = Path(base_dir).absolute(), Path(out_dir)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        init_lora_weights="gaussian",
        task_type="FEATURE_EXTRACTION",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 1)
        model = get_peft_model(ColQwen2.from_pretrained(str(base_dir)), config)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(std=LORA_B_STD)
    model.peft_config["default"].base_model_name_or_path = str(base_dir)
    model.save_pretrained(str(out_dir))
    _save_processor_files(ColQwen2Processor.from_pretrained(str(base_dir)), out_dir)
    return out_dir


def _build_colpali(out_dir: Path) -> None:
    """PaliGemma: a SigLIP tower (width 32, 2 layers) on 112x112 pixels in 14-pixel patches, so
    that every page is 64 image tokens on an 8x8 grid, under a Gemma decoder of width 64.

    As in vidore's checkpoints the output embedding is tied to the input one and not saved; so
    ColPali.from_pretrained leaves model.model.lm_head on the meta device (colpali-engine hides
    it from missing_keys) until model.model.tie_weights() is called.
    """
    from colpali_engine.models import ColPali, ColPaliProcessor
    from transformers import GemmaTokenizer, PaliGemmaConfig, SiglipImageProcessor

    tokenizer = GemmaTokenizer(**_train_gemma_bpe(), padding_side="right")
    tokenizer.add_tokens(list(PALI_EXTRA_TOKENS))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_size = PALI_GRID * PATCH
    image_processor = SiglipImageProcessor(
        size={"height": image_size, "width": image_size}, image_seq_length=PALI_GRID**2
    )
    processor = ColPaliProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vocab_size = _padded(len(tokenizer))
    width = TEXT_SIZES["hidden_size"]
    config = PaliGemmaConfig(
        text_config={
            "model_type": "gemma",
            **TEXT_SIZES,
            "head_dim": width // TEXT_SIZES["num_attention_heads"],
            "vocab_size": vocab_size,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": PATCH,
            "vision_use_head": False,
        },
        image_token_index=processor.image_token_id,
        vocab_size=vocab_size,
        projection_dim=width,
        hidden_size=width,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["ColPali"],
    )
    ColPali(config).save_pretrained(str(out_dir))
    _save_processor_files(processor, out_dir)


def build_tiny_teacher(out_dir: Path, qwen2_5: bool = False) -> Path:
    """Build a tiny Qwen2-VL (or Qwen2.5-VL) chat model in `out_dir`, the AGREE teacher's
    architecture; returns `out_dir`.

    The same sizes, tokenizer and image processor as the tiny ColQwen2 (ColQwen2.5), saved as
    a hub chat checkpoint is: `<Qwen>ForConditionalGeneration` weights with its lm_head, and
    the processor files that AutoProcessor reads (preprocessor_config.json naming the
    processor class). Seeded like build_tiny_model: the same call gives the same files.
    """
    from transformers import (
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 2)
        tokenizer, image_processor, video_processor, config = _qwen_parts(qwen2_5)
        model_class = (
            Qwen2_5_VLForConditionalGeneration if qwen2_5 else Qwen2VLForConditionalGeneration
        )
        config.architectures = [model_class.__name__]
        model_class(config).save_pretrained(str(out_dir))
    processor_class = Qwen2_5_VLProcessor if qwen2_5 else Qwen2VLProcessor
    processor = processor_class(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor
    )
    _save_processor_files(processor, out_dir)
    return out_dir


def _build_qwen(out_dir: Path, qwen2_5: bool) -> None:
    """ColQwen2 (ColQwen2.5) on the tiny Qwen2-VL (Qwen2.5-VL) of `_qwen_parts`."""
    from colpali_engine.models import ColQwen2, ColQwen2_5, ColQwen2_5_Processor, ColQwen2Processor

    tokenizer, image_processor, video_processor, config = _qwen_parts(qwen2_5)
    model_class = ColQwen2_5 if qwen2_5 else ColQwen2
    processor_class = ColQwen2_5_Processor if qwen2_5 else ColQwen2Processor
    processor = processor_class(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor
    )
    config.architectures = [model_class.__name__]
    model_class(config).save_pretrained(str(out_dir))
    _save_processor_files(processor, out_dir)


def _qwen_parts(qwen2_5: bool) -> tuple[Any, Any, Any, Any]:
    """(tokenizer, image processor, video processor, config) of a tiny Qwen2-VL (Qwen2.5-VL):
    a vision tower of width 32 and 2 layers (for 2.5, a windowed one then a full-attention
    one), 14-pixel patches merged 2x2 into 4 to 64 tokens a page, under a Qwen2 decoder of
    width 64 whose 8 rotary frequencies are split (2, 3, 3) over time, height and width."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2Tokenizer,
        Qwen2VLConfig,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    # Specials added in Qwen's order (<|endoftext|> first), then <|im_end|> made the eos token.
    tokenizer = Qwen2Tokenizer(
        **_train_qwen_bpe(),
        unk_token=None,
        bos_token=None,
        eos_token=QWEN_SPECIALS[0],
        pad_token=QWEN_SPECIALS[0],
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS[1:])})
    tokenizer.eos_token = "<|im_end|>"
    image_processor = Qwen2VLImageProcessor(
        min_pixels=QWEN_MIN_TOKENS * QWEN_PIXELS_PER_TOKEN,
        max_pixels=QWEN_MAX_TOKENS * QWEN_PIXELS_PER_TOKEN,
        patch_size=PATCH,
        merge_size=QWEN_MERGE,
        temporal_patch_size=2,
    )
    video_processor = Qwen2VLVideoProcessor(patch_size=PATCH, merge_size=QWEN_MERGE)
    ids = tokenizer.convert_tokens_to_ids
    width = TEXT_SIZES["hidden_size"]
    text_config = {
        **TEXT_SIZES,
        "vocab_size": _padded(len(tokenizer)),
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
    }
    vision_common = {
        "depth": 2,
        "num_heads": 2,
        "patch_size": PATCH,
        "spatial_merge_size": QWEN_MERGE,
        "temporal_patch_size": 2,
    }
    if qwen2_5:
        vision_config = {
            **vision_common,
            "hidden_size": 32,
            "intermediate_size": 64,
            "out_hidden_size": width,
            "window_size": 4 * PATCH * QWEN_MERGE,  # windows of 4x4 tokens, as in Qwen2.5-VL
            "fullatt_block_indexes": [1],
        }
        config_class = Qwen2_5_VLConfig
    else:
        vision_config = {**vision_common, "embed_dim": 32, "mlp_ratio": 2, "hidden_size": width}
        config_class = Qwen2VLConfig
    config = config_class(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    return tokenizer, image_processor, video_processor, config


def _train_gemma_bpe() -> dict[str, Any]:
    """vocab and merges for GemmaTokenizer: Gemma's specials, the 256 byte-fallback tokens, then
    BPE pieces learned on `training_sentences` the way Gemma splits text (spaces become "▁")."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(vocab_size=GEMMA_BPE_TOKENS, show_progress=False)
    bpe.train_from_iterator(training_sentences(), trainer=trainer)
    learned = sorted(bpe.get_vocab().items(), key=lambda item: item[1])
    tokens = [*GEMMA_SPECIALS, *(f"<0x{b:02X}>" for b in range(256))]
    tokens += [token for token, _ in learned]
    return {"vocab": {token: i for i, token in enumerate(tokens)}, "merges": _merges(bpe)}


def _train_qwen_bpe() -> dict[str, Any]:
    """vocab and merges for Qwen2Tokenizer: byte-level BPE learned on `training_sentences`
    with Qwen2's own normalizer and pre-tokenizer, starting from the 256 byte symbols."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=QWEN_BPE_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(training_sentences(), trainer=trainer)
    return {"vocab": bpe.get_vocab(), "merges": _merges(bpe)}


def _merges(bpe: Tokenizer) -> list[tuple[str, str]]:
    """A trained BPE's merges (tokenizers >= 0.20 serialises each as a [left, right] pair)."""
    return [(left, right) for left, right in json.loads(bpe.to_str())["model"]["merges"]]


def _padded(n: int, multiple: int = 64) -> int:
    """Embedding rows for `n` tokens, rounded up to a multiple as the real checkpoints' are."""
    return -(-n // multiple) * multiple


def _save_processor_files(processor: Any, out_dir: Path) -> None:
    """The tokenizer files and preprocessor_config.json, as the hub's colpali checkpoints ship
    them (rather than transformers 5's single processor_config.json)."""
    processor.tokenizer.save_pretrained(str(out_dir))
    processor.image_processor.save_pretrained(str(out_dir))
