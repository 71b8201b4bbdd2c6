"""Phi-3.5-vision forward pass: image features, HD layout, batching, attention backends."""

from __future__ import annotations

import pytest
import torch

from phiv_data.phi3v import image_token_count
from phiv_train.model import ImageTokenMismatchError, image_token_counts
from tests.model_fixtures import (  # noqa: F401  (tiny_checkpoint is a fixture)
    collate,
    image_sizes,
    load_tiny,
    make_pixel_values,
    make_sample,
    pixels_of,
    tiny_checkpoint_fixture,
)

GRID_CASES = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (2, 3), (4, 4), (1, 16)]


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_tiny(tiny_checkpoint)


def test_token_count_matches_the_data_side_formula():
    # phiv_data.phi3v counts from an image size; the model from the padded grid.
    for width, height, crops in [(336, 336, 4), (1000, 300, 16), (300, 1000, 4), (1700, 2250, 16)]:
        from phiv_data.phi3v import hd_grid

        padded_height, padded_width = hd_grid(width, height, crops)
        grid = (padded_height // 336, padded_width // 336)
        assert image_token_counts([grid]) == [image_token_count(width, height, crops)]
    assert image_token_counts([(2, 2), (4, 4)]) == [757, 2509]


def _reference_layout(features, grids, sub_separator, global_separator):
    """SPEC section 3, literally: one row of the expected (tokens, 4C) matrix at a time."""
    rows_out = []

    def merged(crop, row, col):
        # Output cell (row, col) concatenates patches (0,0), (0,1), (1,0), (1,1) of its 2x2 block.
        patches = [(2 * row, 2 * col), (2 * row, 2 * col + 1), (2 * row + 1, 2 * col), (2 * row + 1, 2 * col + 1)]
        return torch.cat([features[crop, r * 24 + c] for r, c in patches])

    start = 0
    for h, w in grids:
        for row in range(12 * h):
            for col in range(12 * w):
                crop = start + 1 + (row // 12) * w + col // 12
                rows_out.append(merged(crop, row % 12, col % 12))
            rows_out.append(sub_separator)
        rows_out.append(global_separator)
        for row in range(12):
            for col in range(12):
                rows_out.append(merged(start, row, col))
            rows_out.append(sub_separator)
        start += 1 + h * w
    return torch.stack(rows_out)


def test_hd_transform_matches_the_spec_layout(model):
    embedding = model.vision_embed_tokens
    grids = [(1, 2), (2, 1), (2, 2)]
    crops = sum(1 + h * w for h, w in grids)
    features = torch.randn(crops, 576, 32)
    with torch.no_grad():
        got = embedding.hd_transform(embedding._merge_2x2(features), grids)
    expected = _reference_layout(features, grids, embedding.sub_GN.flatten(), embedding.glb_GN.flatten())
    assert got.shape == (sum(image_token_counts(grids)), 128)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_separators_land_where_the_spec_says(tiny_checkpoint):
    embedding = load_tiny(tiny_checkpoint).vision_embed_tokens  # its separators get overwritten
    h, w = 2, 3
    with torch.no_grad():
        embedding.sub_GN.fill_(7.0)
        embedding.glb_GN.fill_(-7.0)
        merged = torch.rand(1 + h * w, 12, 12, 128)  # in [0, 1): never equal to +-7
        layout = embedding.hd_transform(merged, [(h, w)])
    is_sub = (layout == 7.0).all(dim=1).nonzero().flatten().tolist()
    is_glb = (layout == -7.0).all(dim=1).nonzero().flatten().tolist()
    row = 12 * w + 1
    sub_rows = [r * row + 12 * w for r in range(12 * h)]
    glb_at = 12 * h * row
    global_rows = [glb_at + 1 + r * 13 + 12 for r in range(12)]
    assert is_sub == sub_rows + global_rows
    assert is_glb == [glb_at]
    # The first crop's merged cell (0, 0) opens the sequence; the global view follows glb_GN.
    torch.testing.assert_close(layout[0], merged[1, 0, 0])
    torch.testing.assert_close(layout[12], merged[2, 0, 0])  # crop (0, 1) starts at column 12
    torch.testing.assert_close(layout[12 * row], merged[1 + w, 0, 0])  # crop (1, 0) at grid row 12
    torch.testing.assert_close(layout[glb_at + 1], merged[0, 0, 0])


def test_clip_features_are_the_penultimate_layer_without_class_token(model):
    embedding = model.vision_embed_tokens
    crops = torch.randn(2, 3, 336, 336)
    with torch.no_grad():
        ours = embedding.crop_features(crops)
        reference = embedding.clip(crops, output_hidden_states=True).hidden_states[-2][:, 1:]
    assert ours.shape == (2, 576, 32)
    torch.testing.assert_close(ours, reference)


def test_features_go_to_their_image_positions_in_order(model):
    # Sample 0: image 1 (1x2), text, image 2 (1x1); sample 1: text only; sample 2: image 2's
    # block before image 1's (numbering order must not matter for placement).
    first = make_sample([4, (1, 2), 5, (1, 1), 3], seed=1)
    second = make_sample([30], seed=2)
    third = make_sample([2, (2, 1), 3, (1, 1)], seed=3)
    block_one = [i for i, t in enumerate(third.input_ids) if t == -1]
    block_two = [i for i, t in enumerate(third.input_ids) if t == -2]
    swapped = list(third.input_ids)
    for i in block_one + block_two:
        swapped[i] = 0
    # Put image 2's tokens first, then image 1's, in the same span.
    span = sorted(block_one + block_two)
    for offset, position in enumerate(span):
        swapped[position] = -2 if offset < len(block_two) else -1
    third.input_ids = swapped
    batch = collate([first, second, third])
    captured = {}
    hook = model.model.layers[0].register_forward_pre_hook(
        lambda module, args: captured.setdefault("embeds", args[0].detach().clone())
    )
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        hook.remove()
    embeds = captured["embeds"]
    embedding = model.vision_embed_tokens
    grids = first.grids + third.grids
    with torch.no_grad():
        per_image = [
            embedding.image_features(batch["pixel_values"][i : i + 1], [grids[i]]) for i in range(len(grids))
        ]
        tokens = model.model.embed_tokens(batch["input_ids"].clamp_min(0))
    ids = batch["input_ids"]
    owners = {(0, 1): 0, (0, 2): 1, (2, 1): 2, (2, 2): 3}
    for (row, number), image in owners.items():
        positions = (ids[row] == -number).nonzero().flatten()
        torch.testing.assert_close(embeds[row, positions], per_image[image])
    text = ids >= 0
    torch.testing.assert_close(embeds[text], tokens[text])


def test_only_real_crops_go_through_clip(model):
    sample = make_sample([3, (1, 2), 2, (1, 1)])
    batch = collate([sample])
    batch["pixel_values"] = make_pixel_values(sample.grids, slots=17)
    batch["pixel_values"][0, 3:] = float("nan")  # padding views: NaN if they were used
    batch["pixel_values"][1, 2:] = float("nan")
    seen = []
    hook = model.vision_embed_tokens.clip.embeddings.register_forward_hook(
        lambda module, args, output: seen.append(args[0].shape[0])
    )
    try:
        with torch.no_grad():
            logits = model(**batch).logits
    finally:
        hook.remove()
    assert seen == [3 + 2]
    assert torch.isfinite(logits).all()


def test_input_ids_are_not_modified(model):
    batch = collate([make_sample([3, (1, 1), 2])])
    before = batch["input_ids"].clone()
    with torch.no_grad():
        model(**batch)
    assert torch.equal(batch["input_ids"], before)


def test_token_count_mismatch_names_sample_image_and_counts(model):
    good = make_sample([3, (1, 1)])
    bad = make_sample([3, (2, 2), 2])
    bad.input_ids.remove(-1)  # one image token short
    batch = collate([good, bad])
    with pytest.raises(ImageTokenMismatchError, match=r"sample 1, image 1: input_ids hold 756 image tokens but its size 672x672 needs 757"):
        model(**batch)


def test_missing_images_and_wrong_image_count_are_clear_errors(model):
    batch = collate([make_sample([3, (1, 1)]), make_sample([2, (1, 2)])])
    with pytest.raises(ImageTokenMismatchError, match="no pixel_values"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    with pytest.raises(ImageTokenMismatchError, match=r"refer to 2 images \(sample 0: 1, sample 1: 1\) but pixel_values holds 1"):
        model(**{**batch, "pixel_values": batch["pixel_values"][:1], "image_sizes": batch["image_sizes"][:1]})
    with pytest.raises(ImageTokenMismatchError, match="multiples of 336"):
        model(**{**batch, "image_sizes": torch.tensor([[336, 336], [336, 600]])})


def test_padded_batch_gives_each_sample_its_own_logits(model):
    # Compared before the (position-wise, 32064-wide) head to keep the test fast on CPU.
    samples = [
        make_sample([5, (1, 2), 20], seed=1),
        make_sample([40], seed=2),  # text only
        make_sample([2, (1, 1), 3, (2, 1), 4], seed=3),
    ]
    for side in ("right", "left"):
        batch = collate(samples, side=side)
        with torch.no_grad():
            batched = model.model(**batch).last_hidden_state
        first_image = 0
        for row, sample in enumerate(samples):
            alone = collate([sample])
            count = len(sample.grids)
            alone.update(pixels_of(batch, first_image, count))
            first_image += count
            with torch.no_grad():
                single = model.model(**alone).last_hidden_state[0]
            real = batch["attention_mask"][row].bool()
            torch.testing.assert_close(batched[row, real], single, rtol=1e-4, atol=1e-4)


def test_loss_is_shifted_cross_entropy_over_labelled_tokens(model):
    batch = collate([make_sample([5, (1, 1), 8], seed=4), make_sample([12], seed=5)])
    labels = batch["input_ids"].clone()
    labels[labels < 0] = -100
    labels[batch["attention_mask"] == 0] = -100
    with torch.no_grad():
        out = model(**batch, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1])
    expected = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def test_eager_and_sdpa_agree(tiny_checkpoint):
    eager = load_tiny(tiny_checkpoint, attn_implementation="eager")
    sdpa = load_tiny(tiny_checkpoint, attn_implementation="sdpa")
    assert eager.config._attn_implementation == "eager"
    assert eager.vision_embed_tokens.clip.config._attn_implementation == "eager"
    assert sdpa.config._attn_implementation == "sdpa"
    batch = collate([make_sample([5, (1, 2), 9], seed=6), make_sample([3, (1, 1)], seed=7)])
    with torch.no_grad():
        torch.testing.assert_close(eager(**batch).logits, sdpa(**batch).logits, rtol=1e-4, atol=1e-5)


def test_image_sizes_may_be_a_list(model):
    sample = make_sample([3, (2, 1)])
    batch = collate([sample])
    with torch.no_grad():
        from_tensor = model(**batch).logits
        from_list = model(**{**batch, "image_sizes": batch["image_sizes"].tolist()}).logits
    torch.testing.assert_close(from_tensor, from_list)
    assert image_sizes([(2, 1)]).tolist() == [[672, 336]]
