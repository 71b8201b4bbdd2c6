"""The tiny tokenizer double: real special tokens at real ids, real file layout, loading."""

from __future__ import annotations

import json

import pytest

from phiv_data.errors import UsageError
from phiv_data.phi3v import SPECIAL_TOKEN_IDS
from phiv_train.tokenization import (
    ADDED_TOKENS,
    load_tokenizer,
    save_tiny_tokenizer,
    tiny_tokenizer_json,
)
from tests.fixtures_processing import tiny_tokenizer


def test_special_tokens_sit_at_the_real_phi35_vision_ids():
    tokenizer = tiny_tokenizer()
    expected = {"<unk>": 0, "<s>": 1, "</s>": 2, "<|endoftext|>": 32000,
                "<|assistant|>": 32001, "<|placeholder1|>": 32002, "<|placeholder4|>": 32005,
                "<|system|>": 32006, "<|end|>": 32007, "<|placeholder5|>": 32008,
                "<|placeholder6|>": 32009, "<|user|>": 32010}
    for token, token_id in {**expected, **SPECIAL_TOKEN_IDS}.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id, token
    assert len(tokenizer) == 32011  # like the real tokenizer; the model has 32064 rows
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id) == (32000, 1, 0)
    assert tokenizer.convert_ids_to_tokens(3) == "<0x00>"  # byte fallback right after </s>
    assert tokenizer.convert_ids_to_tokens(31999).startswith("<tiny_unused_")


def test_control_tokens_in_text_become_single_ids_and_bos_is_prepended():
    tokenizer = tiny_tokenizer()
    ids = tokenizer("<|user|>\nhi<|end|>\n<|assistant|>\nok<|end|>\n<|endoftext|>").input_ids
    assert ids[0] == 1 and ids.count(1) == 1
    for token_id in (32010, 32007, 32001, 32000):
        assert token_id in ids
    assert ids.count(32007) == 2


@pytest.mark.parametrize("text", ["What is the total amount?", "naïve café 日本語 🙂",
                                  "a\tb\n\nc"])
def test_decoding_round_trips_any_text_through_byte_fallback(text):
    tokenizer = tiny_tokenizer()
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert 0 not in ids  # no <unk>: unseen characters fall back to bytes
    assert tokenizer.decode(ids) == text


def test_the_tokenizer_is_deterministic():
    tiny_tokenizer_json.cache_clear()
    first = tiny_tokenizer_json()
    tiny_tokenizer_json.cache_clear()
    assert tiny_tokenizer_json() == first
    assert json.loads(first)["model"]["byte_fallback"] is True


def test_saved_files_have_the_real_layout_and_load_next_to_a_phi3v_config(tmp_path):
    save_tiny_tokenizer(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "LlamaTokenizer" and config["add_bos_token"] is True
    assert {int(k): v["content"] for k, v in config["added_tokens_decoder"].items()
            if int(k) >= 32000} == ADDED_TOKENS
    # A real checkpoint folder has a config.json whose auto_map points at remote code:
    # loading must neither prompt for nor run it.
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "phi3_v", "auto_map": {"AutoConfig": "configuration_phi3_v.Phi3VConfig"}}))
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.convert_tokens_to_ids("<|user|>") == 32010
    assert tokenizer("Hello").input_ids == tiny_tokenizer()("Hello").input_ids


def test_loading_a_folder_without_tokenizer_files_says_what_to_do(tmp_path):
    with pytest.raises(UsageError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
