"""Each training mode on the tiny checkpoint: the loss goes down and exactly the right
parameters change; the results load back; evaluation writes per-record scores."""

from __future__ import annotations

import json

import pytest
import torch
from bitsandbytes.functional import dequantize_4bit
from fixtures_train import base_arguments, colour_dataset, write_dataset
from safetensors.torch import load_file
from transformers import TrainerCallback

from phiv_train.cli import parse_train_args
from phiv_train.model import Phi3VForCausalLM
from phiv_train.recipe import run

CLIP = "model.vision_embed_tokens.img_processor."
UNUSED = (CLIP + "vision_model.encoder.layers.1.", CLIP + "vision_model.post_layernorm.")
PROJECTOR = ("model.vision_embed_tokens.img_projection.", "model.vision_embed_tokens.glb_GN",
             "model.vision_embed_tokens.sub_GN")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return colour_dataset(tmp_path_factory.mktemp("data") / "colours", train=8, val=4)


@pytest.fixture(scope="module")
def original(checkpoint):
    tensors = load_file(checkpoint / "model.safetensors")
    tensors.pop("model.vision_embed_tokens.wte.weight", None)  # alias of embed_tokens
    return tensors


def train(checkpoint, data, output, *flags, callbacks=None, **options):
    config, _ = parse_train_args(base_arguments(checkpoint, data, output, **options) + list(flags))
    return run(config, callbacks=callbacks)


def losses(result):
    return [entry["loss"] for entry in result.summary["losses"]]


def base_name(name: str) -> str:
    """A PEFT parameter name as the checkpoint names it."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def changed_parameters(model, original) -> set[str]:
    changed = set()
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            continue
        reference = original[base_name(name)]
        if not torch.equal(parameter.detach().float().cpu(), reference.float()):
            changed.add(base_name(name))
    return changed


def test_full_fine_tuning(checkpoint, data, original, tmp_path):
    result = train(checkpoint, data, tmp_path / "out", "--no-eval-after-training")
    values = losses(result)
    assert len(values) == 4 and values[-1] < values[0]
    expected = {name for name in original if not name.startswith(UNUSED)}
    assert changed_parameters(result.model, original) == expected
    # the final model is a checkpoint that loads, with the trained weights, and its tokenizer
    loaded = Phi3VForCausalLM.from_pretrained(tmp_path / "out")
    trained = dict(result.model.named_parameters())
    for name, parameter in loaded.named_parameters():
        assert torch.equal(parameter, trained[name]), name
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["mode"] == "full" and summary["global_step"] == 4


def test_frozen_vision_keeps_training_text_embeddings(checkpoint, data, original, tmp_path):
    result = train(checkpoint, data, tmp_path / "out", "--freeze-vision", "--no-eval-after-training")
    assert losses(result)[-1] < losses(result)[0]
    changed = changed_parameters(result.model, original)
    assert changed == {name for name in original if not name.startswith(CLIP)}
    assert "model.embed_tokens.weight" in changed and "lm_head.weight" in changed
    assert {"model.vision_embed_tokens.glb_GN", "model.vision_embed_tokens.img_projection.0.weight"} <= changed


def test_frozen_vision_and_projector(checkpoint, data, original, tmp_path):
    result = train(checkpoint, data, tmp_path / "out", "--freeze-vision", "--freeze-projector",
                   "--no-eval-after-training", max_steps=3)
    # a checkpoint every --save-steps (2) and one at the end
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    changed = changed_parameters(result.model, original)
    assert changed == {name for name in original
                       if not name.startswith(CLIP) and not name.startswith(PROJECTOR)}
    assert "model.embed_tokens.weight" in changed


def lora_modules(model) -> set[str]:
    return {base_name(name).split(".lora_A.")[0] for name, _ in model.named_parameters()
            if ".lora_A." in name}


def check_lora_run(result, original, *, vision: bool):
    model = result.model
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in name for name in trainable)
    decoder = {f"model.layers.{i}.{part}" for i in range(2) for part in
               ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")}
    expected = decoder | {"lm_head"}
    if vision:  # CLIP's used layer (not the unused last one) and the projector
        expected |= {f"{CLIP}vision_model.encoder.layers.0.{part}" for part in
                     ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                      "self_attn.out_proj", "mlp.fc1", "mlp.fc2")}
        expected |= {"model.vision_embed_tokens.img_projection.0",
                     "model.vision_embed_tokens.img_projection.2"}
    assert lora_modules(model) == expected
    for name, parameter in model.named_parameters():
        if ".lora_B." in name:  # gaussian init starts B at zero; every adapter learned
            assert parameter.abs().sum() > 0, name


def test_lora_trains_adapters_only_and_merges(checkpoint, data, original, tmp_path):
    result = train(checkpoint, data, tmp_path / "out", "--use-lora", "--merge-lora",
                   "--no-eval-after-training", lora_rank=4, learning_rate=2e-2)
    assert losses(result)[-1] < losses(result)[0]
    check_lora_run(result, original, vision=True)
    assert changed_parameters(result.model, original) == set()
    adapter = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert adapter and all(".lora_" in key for key in adapter)  # no copy of the base weights
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["init_lora_weights"] == "gaussian"
    merged = Phi3VForCausalLM.from_pretrained(tmp_path / "out" / "merged")
    weights = dict(merged.named_parameters())
    assert not torch.equal(weights["model.layers.0.self_attn.qkv_proj.weight"],
                           original["model.layers.0.self_attn.qkv_proj.weight"])
    assert torch.equal(weights["model.layers.0.input_layernorm.weight"],
                       original["model.layers.0.input_layernorm.weight"])


def test_lora_with_frozen_vision_has_no_vision_adapters(checkpoint, data, original, tmp_path):
    result = train(checkpoint, data, tmp_path / "out", "--use-lora", "--freeze-vision",
                   "--no-eval-after-training", lora_rank=4, max_steps=2, learning_rate=2e-2)
    check_lora_run(result, original, vision=False)


class Snapshot(TrainerCallback):
    """Copies every parameter when training starts (after quantisation and PEFT wrapping)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.parameters = {name: parameter.detach().clone()
                           for name, parameter in model.named_parameters()}


def test_qlora_trains_adapters_over_4bit_weights(checkpoint, data, original, tmp_path):
    snapshot = Snapshot()
    result = train(checkpoint, data, tmp_path / "out", "--use-qlora", "--no-eval-after-training",
                   lora_rank=4, learning_rate=1e-2, callbacks=[snapshot])
    assert losses(result)[-1] < losses(result)[0]
    check_lora_run(result, original, vision=True)
    model = result.model
    quantised = {base_name(name): module for name, module in model.named_modules()
                 if type(module).__name__ == "Linear4bit"}
    # every linear layer but lm_head (which bitsandbytes leaves alone) is nf4
    linear = {base_name(name) for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and ".lora_" not in name}
    assert linear - set(quantised) == {"lm_head.base_layer"}
    assert all(module.weight.quant_state.quant_type == "nf4" for module in quantised.values())
    # the 4-bit weights are the quantised checkpoint weights ...
    for name, module in quantised.items():
        weight = name.removesuffix(".base_layer") + ".weight"
        restored = dequantize_4bit(module.weight.data, module.weight.quant_state).float()
        error = (restored - original[weight]).abs().max()
        assert error <= 0.15 * original[weight].abs().max(), weight
    # ... and training moved nothing but the adapters: not the packed 4-bit weights, not the
    # unquantised ones (norms, embeddings, lm_head), which still equal the checkpoint's
    for name, parameter in model.named_parameters():
        if ".lora_" in name:
            continue
        assert torch.equal(parameter, snapshot.parameters[name]), name
        if parameter.dtype != torch.uint8:
            assert torch.equal(parameter.float(), original[base_name(name)].float()), name
    adapter = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert adapter and all(".lora_" in key for key in adapter)  # no copy of the base weights


def test_evaluation_before_and_after_with_per_record_scores(checkpoint, data, tmp_path):
    result = train(checkpoint, data, tmp_path / "out", "--eval-before-training", max_steps=2)
    for stage in ("before", "after"):
        report = json.loads((tmp_path / "out" / f"eval_{stage}.json").read_text())
        assert report["metric"] == "accuracy" and report["records"] == report["scored"] == 4
        assert [p["id"] for p in report["predictions"]] == [f"val-{i:010d}" for i in range(4)]
        assert all(p["score"] in (0.0, 1.0) and p["answers"] in (["red"], ["blue"])
                   for p in report["predictions"])
        assert report["score"] == sum(p["score"] for p in report["predictions"]) / 4
    assert result.summary["eval_after"]["records"] == 4


def test_anls_for_records_with_meta_answers_and_unlabeled_eval(checkpoint, tmp_path):
    def record(split, index, labeled=True):
        return {"id": f"{split}-{index}", "source": "docvqa", "conversations": [
            {"images": [f"{split}/red/{index}.png"], "user": "What is the date?",
             "assistant": "1998" if labeled else None}],
            "meta": {"answers": ["1998", "in 1998"]} if labeled else {}}

    data = write_dataset(tmp_path / "docs", {"train": [record("train", i) for i in range(2)],
                                             "val": [record("val", i) for i in range(2)],
                                             "test": [record("test", i, False) for i in range(2)]})
    train(checkpoint, data, tmp_path / "out", max_steps=1, save_steps=1)
    report = json.loads((tmp_path / "out" / "eval_after.json").read_text())
    assert report["metric"] == "anls"
    assert report["predictions"][0]["answers"] == ["1998", "in 1998"]
    train(checkpoint, data, tmp_path / "out2", "--eval-data", str(data / "colours_test.jsonl"),
          max_steps=1, save_steps=1)
    unlabeled = json.loads((tmp_path / "out2" / "eval_after.json").read_text())
    assert unlabeled["records"] == 2 and unlabeled["scored"] == 0 and unlabeled["score"] is None
    assert all(isinstance(p["prediction"], str) and p["score"] is None for p in unlabeled["predictions"])
