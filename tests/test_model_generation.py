"""generate(): greedy decoding with images, the cache, left padding, stop tokens, LongRoPE."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from phiv_train.model.tiny import write_tiny_checkpoint
from tests.model_fixtures import (  # noqa: F401  (tiny_checkpoint is a fixture)
    ASSISTANT,
    END,
    collate,
    load_tiny,
    make_sample,
    pixels_of,
    tiny_checkpoint_fixture,
)


def _prompt(pieces, seed):
    sample = make_sample(pieces, seed=seed)
    sample.input_ids += [END, ASSISTANT]
    return sample


def _greedy_without_cache(model, batch, steps):
    """Reference decoding: the whole sequence again at every step, no cache."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    images = {key: batch[key] for key in ("pixel_values", "image_sizes") if key in batch}
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1, **images).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    model = load_tiny(tiny_checkpoint)
    model.generation_config.eos_token_id = None  # random weights: let every step run
    return model


def test_greedy_generation_with_images_uses_the_cache_correctly(model):
    batch = collate([_prompt([4, (1, 2), 6], seed=1)])
    generated = model.generate(**batch, max_new_tokens=6, do_sample=False)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 6
    assert torch.equal(generated, _greedy_without_cache(model, batch, 6))
    assert torch.equal(generated[:, : batch["input_ids"].shape[1]], batch["input_ids"])


def test_left_padded_batch_generates_what_each_prompt_generates_alone(model):
    prompts = [_prompt([4, (1, 2), 6], seed=1), _prompt([25], seed=2), _prompt([2, (1, 1), 3], seed=3)]
    batch = collate(prompts, side="left")
    length = batch["input_ids"].shape[1]
    generated = model.generate(**batch, max_new_tokens=5, do_sample=False)
    first_image = 0
    for row, prompt in enumerate(prompts):
        alone = collate([prompt])
        alone.update(pixels_of(batch, first_image, len(prompt.grids)))
        first_image += len(prompt.grids)
        single = model.generate(**alone, max_new_tokens=5, do_sample=False)
        assert generated[row, length:].tolist() == single[0, len(prompt.input_ids):].tolist()


@pytest.mark.parametrize("stop_token", [32007, 32000])
def test_generation_stops_at_end_and_endoftext(tiny_checkpoint, stop_token):
    model = load_tiny(tiny_checkpoint)
    assert model.generation_config.eos_token_id == [32007, 32000]
    batch = collate([_prompt([3, (1, 1), 4], seed=5)])
    length = batch["input_ids"].shape[1]
    free = model.generate(**batch, max_new_tokens=6, do_sample=False, eos_token_id=[])[0, length:].tolist()
    # Make the third token greedy decoding picks become the stop token by swapping the two
    # rows of the output layer; the first two steps are unaffected.
    third = free[2]
    assert stop_token not in free[:3] and third not in free[:2]
    with torch.no_grad():
        rows = model.lm_head.weight[[third, stop_token]].clone()
        model.lm_head.weight[[stop_token, third]] = rows
    stopped = model.generate(**batch, max_new_tokens=6, do_sample=False)[0, length:].tolist()
    assert stopped == free[:2] + [stop_token]


@pytest.mark.slow
def test_generation_crossing_the_longrope_switch_reruns_the_images(model):
    # A prompt of 4094 tokens: the first steps use the short factors, the step that passes
    # 4096 positions drops the cache and runs the whole sequence (images included) again.
    prompt = _prompt([3, (1, 1), 4094 - 313 - 6], seed=7)
    batch = collate([prompt])
    assert batch["input_ids"].shape[1] == 4094
    generated = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert torch.equal(generated, _greedy_without_cache(model, batch, 5))


def _readme_example() -> str:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The model and processor", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.+?)\n```", section, flags=re.DOTALL)
    return code


def test_the_readme_generation_example_runs_on_the_tiny_checkpoint(tmp_path, monkeypatch, capsys):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny-phi3v")  # with its tokenizer
    Image.new("RGB", (500, 400), (250, 250, 250)).save(tmp_path / "page.png")
    monkeypatch.chdir(tmp_path)
    code = _readme_example()
    assert '"Phi-3.5-vision-instruct/"' in code
    namespace: dict = {}
    code = code.replace('"Phi-3.5-vision-instruct/"', repr(str(checkpoint)))
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (the project's own README)
    prompt_length = namespace["batch"]["input_ids"].shape[1]
    assert prompt_length > 2509  # the page's 16 crops are in the prompt
    assert namespace["output"].shape[1] > prompt_length  # something was generated
    assert capsys.readouterr().out == namespace["answer"] + "\n"
