"""A tiny stand-in for the Phi-3.5-vision tokenizer, for tests and demos (no hub access).

The real tokenizer is a Llama SentencePiece BPE with byte fallback (32000 pieces) plus
added control tokens at fixed ids. The tiny one has the same shape where it matters to
phiv: ``<unk>``/``<s>``/``</s>`` at 0/1/2, the 256 byte-fallback pieces, a small BPE learned
in code from a fixed corpus, unused filler pieces up to id 31999, and the real added
tokens at their real ids (``<|endoftext|>`` = 32000 ... ``<|user|>`` = 32010). Like the real
tokenizer it holds 32011 entries; the model's embedding has 32064 rows
(``phiv_data.phi3v.VOCAB_SIZE``), the extra rows are never produced by the tokenizer.

:func:`save_tiny_tokenizer` writes the real file layout (``tokenizer.json``,
``tokenizer_config.json``, ``special_tokens_map.json``) with ``tokenizer_class``
``LlamaTokenizer``; its ``tokenizer.json`` has the legacy Llama layout of the real file
(prefix-space normaliser, byte fallback, ``<s>`` template). :func:`load_tokenizer` loads
either one the same way.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from phiv_data.errors import UsageError, display_path
from phiv_data.phi3v import PAD_TOKEN_ID, SPECIAL_TOKEN_IDS

SPIECE_UNDERLINE = "\u2581"
BASE_VOCAB_SIZE = 32000
"""Ids below this are regular pieces; the added control tokens start here."""

ADDED_TOKENS: dict[int, str] = {
    32000: "<|endoftext|>",
    32001: "<|assistant|>",
    32002: "<|placeholder1|>",
    32003: "<|placeholder2|>",
    32004: "<|placeholder3|>",
    32005: "<|placeholder4|>",
    32006: "<|system|>",
    32007: "<|end|>",
    32008: "<|placeholder5|>",
    32009: "<|placeholder6|>",
    32010: "<|user|>",
}
"""The real Phi-3.5-vision added tokens, by id."""

_TRAINED_PIECES = 1500
"""Size of the learned part of the tiny vocabulary (byte pieces and specials included)."""

_CORPUS_LINES = (
    ("Classify the video into one of the following classes: ApplyEyeMakeup, ApplyLipstick, "
     "Archery, BabyCrawling, BalanceBeam, BandMarching, BaseballPitch, Basketball, "
     "BasketballDunk, BenchPress."),
    "What is the date mentioned in this letter? What is the total amount on the invoice?",
    "Answer briefly. Is the statement about the two images true or false? True False",
    "Is this meme hateful? Answer yes or no. The text on the image says something.",
    "The quick brown fox jumps over the lazy dog. A picture of a cat sitting on a mat.",
    "Describe the image in detail. There are two dogs playing in the park near a tree.",
    "In the left image there is exactly one bird, and the right image shows three birds.",
    "Page 1 of 12, Table 3: results for 1998, 1999 and 2000; total $1,234.56 (approx.)",
    "Who is the sender of the memo? To: Dr. Smith, From: R. J. Reynolds Tobacco Company.",
    "numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 and punctuation . , ; : ! ? ' \" ( ) - /",
)


def _corpus() -> list[str]:
    # Repeated so that common words get merged into whole pieces, like a real vocabulary.
    return [line for line in _CORPUS_LINES for _ in range(8)]


@functools.lru_cache(maxsize=1)
def tiny_tokenizer_json() -> str:
    """The tiny tokenizer as a ``tokenizers`` JSON string (deterministic, cached).

    Returns:
        The content of ``tokenizer.json``.
    """
    byte_pieces = [f"<0x{value:02X}>" for value in range(256)]
    learner = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    learner.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=SPIECE_UNDERLINE, prepend_scheme="always", split=True
    )
    trainer = trainers.BpeTrainer(
        vocab_size=_TRAINED_PIECES,
        special_tokens=["<unk>", "<s>", "</s>", *byte_pieces],
        show_progress=False,
    )
    learner.train_from_iterator(_corpus(), trainer=trainer)
    learned = json.loads(learner.to_str())["model"]
    vocab: dict[str, int] = dict(learned["vocab"])
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" "))
              for merge in learned["merges"]]
    # Unused pieces keep the real id layout: no merge can produce them.
    for index in range(len(vocab), BASE_VOCAB_SIZE):
        vocab[f"<tiny_unused_{index}>"] = index

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>",
                                     byte_fallback=True, fuse_unk=True))
    # The layout of the real checkpoint's tokenizer.json (a legacy Llama conversion): a
    # prefix space is prepended to every text segment, including the segments that follow
    # an added token and each piece the processor tokenizes between image placeholders.
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Prepend(SPIECE_UNDERLINE),
        normalizers.Replace(" ", SPIECE_UNDERLINE),
    ])
    tokenizer.decoder = decoders.Sequence([
        decoders.Replace(SPIECE_UNDERLINE, " "),
        decoders.ByteFallback(),
        decoders.Fuse(),
        decoders.Strip(content=" ", left=1, right=0),
    ])
    tokenizer.add_special_tokens([
        AddedToken(content, special=True, normalized=False)
        for content in ("<unk>", "<s>", "</s>")
    ])
    for token_id, content in sorted(ADDED_TOKENS.items()):
        added = tokenizer.add_special_tokens([AddedToken(content, special=True,
                                                         normalized=False, rstrip=False)])
        if added != 1 or tokenizer.token_to_id(content) != token_id:
            raise AssertionError(f"tiny tokenizer: {content} did not land at id {token_id}")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return tokenizer.to_str()


def _tokenizer_config() -> dict:
    added = {0: "<unk>", 1: "<s>", 2: "</s>", **ADDED_TOKENS}
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(token_id): {
                "content": content, "lstrip": False, "normalized": False,
                "rstrip": False, "single_word": False, "special": True,
            }
            for token_id, content in added.items()
        },
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "legacy": False,
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }


def save_tiny_tokenizer(directory: str | Path) -> Path:
    """Write the tiny tokenizer's files into ``directory`` (created if missing).

    Args:
        directory: target folder, usually a tiny checkpoint directory.

    Returns:
        The directory, as a ``Path``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(tiny_tokenizer_json(), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(
        json.dumps(_tokenizer_config(), indent=2) + "\n", encoding="utf-8"
    )
    special_map = {
        "bos_token": "<s>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<unk>",
    }
    (directory / "special_tokens_map.json").write_text(
        json.dumps(special_map, indent=2) + "\n", encoding="utf-8"
    )
    return directory


def load_tokenizer(directory: str | Path):
    """Load a checkpoint's tokenizer from its folder, exactly as its ``tokenizer.json`` says.

    ``tokenizer.json`` is used as it is (``PreTrainedTokenizerFast``), with the special
    tokens of ``tokenizer_config.json``. ``AutoTokenizer`` is avoided on purpose: next to the
    real checkpoint's ``config.json`` it asks to run remote code, and as ``LlamaTokenizer``
    transformers 5 rebuilds the pre-tokenizer, which changes where prefix spaces go compared
    with the tokenization the model was trained on.

    Args:
        directory: a checkpoint (or tokenizer) folder holding ``tokenizer.json``.

    Returns:
        A transformers fast tokenizer; no network access is attempted.

    Raises:
        UsageError: when the folder has no ``tokenizer.json``.
    """
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        raise UsageError(
            f"{display_path(directory)}: no tokenizer.json in this folder",
            hint="point to a Phi-3.5-vision checkpoint folder that holds its tokenizer files, "
            "or write a tiny one with phiv_train.tokenization.save_tiny_tokenizer",
        )
    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)


def build_tiny_tokenizer():
    """The tiny tokenizer, loaded the way a checkpoint's tokenizer is loaded.

    Returns:
        A transformers fast tokenizer with the real Phi-3.5-vision special tokens at their
        real ids; pad is ``<|endoftext|>``, a ``<s>`` is added in front by default.
    """
    with tempfile.TemporaryDirectory(prefix="phiv-tiny-tokenizer-") as folder:
        save_tiny_tokenizer(folder)
        tokenizer = load_tokenizer(folder)
    if tokenizer.pad_token_id != PAD_TOKEN_ID or tokenizer.bos_token_id != SPECIAL_TOKEN_IDS["<s>"]:
        raise AssertionError("tiny tokenizer: pad/bos ids do not match Phi-3.5-vision")
    return tokenizer
