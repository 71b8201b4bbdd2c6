"""Image features of Phi-3.5-vision: CLIP tower, HD transform, separators, projection.

Per image with a padded size of ``h x w`` crops (``image_sizes`` = ``[336*h, 336*w]``):

1. the global view and the ``h*w`` real crops (zero-padding crops are never computed) go
   through CLIP; features are the second-to-last layer's output without the class token,
   24x24x1024 per crop;
2. 2x2 merge: each output cell concatenates the patches (0,0), (0,1), (1,0), (1,1) ->
   12x12x4096 per crop;
3. the crops are tiled row-major into a (12h)x(12w) grid and ``sub_GN`` ends each of its
   rows; then ``glb_GN``; then the global view's 12 rows, each also ended by ``sub_GN``
   ("sub_glb" order): ``(h*w + 1)*144 + 1 + (h + 1)*12`` vectors in all;
4. the projection MLP (Linear, GELU, Linear) maps them to the decoder width, and they are
   written, in order, at the positions where ``input_ids`` holds ``-k`` for image ``k``.

Checkpoint names live under ``model.vision_embed_tokens.``: ``img_processor.vision_model.*``
(this module keeps the CLIP model at exactly that path), ``img_projection.0``,
``img_projection.2``, ``glb_GN``, ``sub_GN``. The ``wte`` alias of the token embedding is
not a module here (see ``checkpoint.py``): sharing it made freezing the vision side freeze
the text embeddings in the original recipe.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import CLIPVisionModel

from phiv_data.phi3v import CROP_SIZE, TOKENS_PER_CROP
from phiv_train.model.configuration import Phi3VConfig
from phiv_train.model.errors import ImageTokenMismatchError

MERGED_SIDE = 12
"""Side of the merged patch grid of one crop (24 patches merged 2x2)."""


def image_token_counts(grids: Sequence[tuple[int, int]]) -> list[int]:
    """Number of image tokens of each image, ``(h*w + 1)*144 + 1 + (h + 1)*12``.

    Args:
        grids: ``(h, w)`` of each image in crops.

    Returns:
        One count per image, in order.
    """
    return [(h * w + 1) * TOKENS_PER_CROP + 1 + (h + 1) * MERGED_SIDE for h, w in grids]


class CLIPTowerHolder(nn.Module):
    """Holds the CLIP model as ``vision_model`` so parameter names match the checkpoint.

    ``transformers.CLIPVisionModel`` has no ``vision_model`` level in its own names any
    more; nesting it here gives ``img_processor.vision_model.<CLIP name>`` exactly.
    """

    def __init__(self, vision_model: CLIPVisionModel) -> None:
        super().__init__()
        self.vision_model = vision_model


class Phi3VImageEmbedding(nn.Module):
    """CLIP tower + HD transform + separators + projection (``model.vision_embed_tokens``)."""

    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__()
        vision_config = config.vision_config()
        vision_config._attn_implementation = config._attn_implementation
        self.img_processor = CLIPTowerHolder(CLIPVisionModel(vision_config))
        feature_size = config.image_feature_size
        self.img_projection = nn.Sequential(
            nn.Linear(feature_size, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, feature_size))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, feature_size))
        self.freeze_unused_parameters()

    @property
    def clip(self) -> CLIPVisionModel:
        """The CLIP vision model (``img_processor.vision_model``)."""
        return self.img_processor.vision_model

    def unused_parameters(self) -> list[nn.Parameter]:
        """CLIP's last layer and ``post_layernorm``: features come from the layer before."""
        return [*self.clip.encoder.layers[-1].parameters(), *self.clip.post_layernorm.parameters()]

    def freeze_unused_parameters(self) -> None:
        """Set ``requires_grad=False`` on :meth:`unused_parameters`.

        They never receive gradients, and DDP fails on trainable parameters without one.
        Call again after anything that unfreezes the whole model (``requires_grad_(True)``).
        """
        for parameter in self.unused_parameters():
            parameter.requires_grad_(False)

    def crop_features(self, crops: torch.Tensor) -> torch.Tensor:
        """CLIP features of crops: second-to-last layer, class token dropped.

        Args:
            crops: ``(n, 3, 336, 336)`` normalised pixels.

        Returns:
            ``(n, 576, hidden)`` patch features in row-major patch order.
        """
        clip = self.clip
        hidden = clip.pre_layrnorm(clip.embeddings(crops))
        # Only the layers up to the second-to-last one are run: the last one's output is
        # never used, so computing it would only cost time and memory.
        for layer in clip.encoder.layers[:-1]:
            hidden = layer(hidden, None)
        return hidden[:, 1:]

    def _merge_2x2(self, features: torch.Tensor) -> torch.Tensor:
        """``(n, 576, C)`` -> ``(n, 12, 12, 4C)``, cells as (0,0), (0,1), (1,0), (1,1)."""
        count, _, channels = features.shape
        return (
            features.reshape(count, MERGED_SIDE, 2, MERGED_SIDE, 2, channels)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(count, MERGED_SIDE, MERGED_SIDE, 4 * channels)
        )

    def _with_row_separators(self, grid: torch.Tensor) -> torch.Tensor:
        """``(rows, cols, D)`` -> ``(rows*(cols+1), D)`` with ``sub_GN`` after every row."""
        rows, _, width = grid.shape
        separator = self.sub_GN.reshape(1, 1, width).to(grid.dtype).expand(rows, 1, width)
        return torch.cat([grid, separator], dim=1).reshape(-1, width)

    def hd_transform(self, merged: torch.Tensor, grids: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Arrange merged crop features with separators, image after image ("sub_glb").

        Args:
            merged: ``(sum(1 + h*w), 12, 12, D)``: per image its global view then its
                crops in row-major order.
            grids: ``(h, w)`` of each image.

        Returns:
            ``(sum of image_token_counts(grids), D)`` features before the projection.
        """
        width = merged.shape[-1]
        global_separator = self.glb_GN.reshape(1, width).to(merged.dtype)
        pieces = []
        start = 0
        # One iteration per image (not per token): each image has its own grid shape.
        for rows, cols in grids:
            global_view = merged[start]
            crops = merged[start + 1 : start + 1 + rows * cols]
            tiled = (
                crops.reshape(rows, cols, MERGED_SIDE, MERGED_SIDE, width)
                .permute(0, 2, 1, 3, 4)
                .reshape(rows * MERGED_SIDE, cols * MERGED_SIDE, width)
            )
            pieces += [
                self._with_row_separators(tiled),
                global_separator,
                self._with_row_separators(global_view),
            ]
            start += 1 + rows * cols
        return torch.cat(pieces)

    def image_features(self, pixel_values: torch.Tensor, grids: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Projected features of all images, concatenated in image order.

        Args:
            pixel_values: ``(num_images, max_crops + 1, 3, 336, 336)``; per image the global
                view first, then its crops, then zero padding (ignored).
            grids: ``(h, w)`` of each image (``image_sizes // 336``).

        Returns:
            ``(sum of image_token_counts(grids), hidden_size)``.
        """
        slots = pixel_values.shape[1]
        wanted = [index * slots + crop for index, (h, w) in enumerate(grids) for crop in range(1 + h * w)]
        flat = pixel_values.flatten(0, 1)
        if len(wanted) != flat.shape[0]:
            flat = flat.index_select(0, torch.tensor(wanted, device=flat.device))
        merged = self._merge_2x2(self.crop_features(flat))
        features = self.hd_transform(merged, grids)
        first = self.img_projection[0]
        target = first.bias.dtype if first.bias is not None else self.glb_GN.dtype
        return self.img_projection(features.to(target))

    def zero_contribution(self, with_images: bool) -> torch.Tensor | None:
        """A zero that depends on the trainable parameters a batch leaves unused, or None.

        Added to the embeddings during training, it gives those parameters a (zero)
        gradient, so DDP does not fail on them and ``find_unused_parameters`` is not needed:
        without images that is every trainable vision parameter; with images only trainable
        parameters inside CLIP's unused last layer and ``post_layernorm`` (LoRA adapters
        placed there, or a global unfreeze).

        Args:
            with_images: whether the batch ran images through the tower.
        """
        candidates = self.unused_parameters() if with_images else list(self.parameters())
        trainable = [parameter for parameter in candidates if parameter.requires_grad]
        if not trainable:
            return None
        return torch.stack([parameter.sum() for parameter in trainable]).sum() * 0.0

    def embed_images(
        self,
        input_ids: torch.Tensor,
        inputs_embeds: torch.Tensor,
        pixel_values: torch.Tensor | None,
        image_sizes: torch.Tensor | Sequence[Sequence[int]] | None,
    ) -> torch.Tensor:
        """Write image features at the image-token positions of ``inputs_embeds``.

        Sample ``b`` uses images ``1..K_b`` (``K_b`` = its most negative id); the batch's
        images are stacked in ``pixel_values`` sample after sample, in numbering order.
        The features of image ``k`` of sample ``b`` fill the positions holding ``-k`` in
        that sample, in position order.

        Args:
            input_ids: ``(batch, seq)``; ``-k`` marks the tokens of image ``k``. Not modified.
            inputs_embeds: ``(batch, seq, hidden)`` token embeddings.
            pixel_values: ``(num_images, max_crops + 1, 3, 336, 336)`` or None.
            image_sizes: ``(num_images, 2)`` padded ``[height, width]`` in pixels, or None.

        Returns:
            A new embeddings tensor (``inputs_embeds`` is not modified).

        Raises:
            ImageTokenMismatchError: when the image tokens of a sample do not match its
                images (names the sample, the image and both counts), or the shapes of
                ``pixel_values``/``image_sizes`` disagree with ``input_ids``.
        """
        batch_index, position = torch.nonzero(input_ids < 0, as_tuple=True)
        images_per_sample = (-input_ids).clamp_min(0).amax(dim=1)
        first_image = torch.cumsum(images_per_sample, 0) - images_per_sample
        image_number = -input_ids[batch_index, position]
        image_index = first_image[batch_index] + image_number - 1
        per_sample = images_per_sample.tolist()
        grids = _check_images(per_sample, pixel_values, image_sizes)
        if not grids:
            return inputs_embeds
        found = torch.bincount(image_index, minlength=len(grids)).tolist()
        _check_token_counts(per_sample, grids, found)
        features = self.image_features(pixel_values, grids)
        # Sorting by image (stable keeps position order) lines the positions up with the
        # features, which are concatenated image after image.
        order = torch.argsort(image_index, stable=True)
        return inputs_embeds.index_put(
            (batch_index[order], position[order]), features.to(inputs_embeds.dtype)
        )


def _check_images(
    per_sample: list[int],
    pixel_values: torch.Tensor | None,
    image_sizes: torch.Tensor | Sequence[Sequence[int]] | None,
) -> list[tuple[int, int]]:
    """Validate the image inputs against ``input_ids``; return each image's ``(h, w)``."""
    total = sum(per_sample)
    described = ", ".join(f"sample {b}: {k}" for b, k in enumerate(per_sample) if k)
    if pixel_values is None:
        if total:
            raise ImageTokenMismatchError(
                f"input_ids hold image tokens ({described} images) but no pixel_values were given",
                hint="pass the processor's pixel_values and image_sizes with input_ids",
            )
        return []
    if pixel_values.ndim != 5 or tuple(pixel_values.shape[2:]) != (3, CROP_SIZE, CROP_SIZE):
        raise ImageTokenMismatchError(
            f"pixel_values must have shape (num_images, num_crops + 1, 3, {CROP_SIZE}, "
            f"{CROP_SIZE}), got {tuple(pixel_values.shape)}",
        )
    if pixel_values.shape[0] != total:
        raise ImageTokenMismatchError(
            f"input_ids refer to {total} images ({described or 'none'}) but pixel_values holds "
            f"{pixel_values.shape[0]}",
            hint="stack the images of all samples in order: sample after sample, image 1..K",
        )
    if image_sizes is None:
        raise ImageTokenMismatchError("pixel_values were given without image_sizes")
    sizes = torch.as_tensor(image_sizes).reshape(-1, 2).tolist() if total else []
    if len(sizes) != total:
        raise ImageTokenMismatchError(f"image_sizes has {len(sizes)} rows for {total} images")
    grids = []
    for index, (height, width) in enumerate(sizes):
        height, width = int(height), int(width)
        if height <= 0 or width <= 0 or height % CROP_SIZE or width % CROP_SIZE:
            raise ImageTokenMismatchError(
                f"image_sizes[{index}] is [{height}, {width}]; it must be the padded size, "
                f"positive multiples of {CROP_SIZE}",
            )
        rows, cols = height // CROP_SIZE, width // CROP_SIZE
        if 1 + rows * cols > pixel_values.shape[1]:
            raise ImageTokenMismatchError(
                f"image {index} of size [{height}, {width}] needs {1 + rows * cols} views but "
                f"pixel_values holds {pixel_values.shape[1]} per image",
            )
        grids.append((rows, cols))
    return grids


def _check_token_counts(per_sample: list[int], grids: list[tuple[int, int]], found: list[int]) -> None:
    expected = image_token_counts(grids)
    problems = []
    index = 0
    for sample, count in enumerate(per_sample):
        for number in range(1, count + 1):
            if found[index] != expected[index]:
                problems.append(
                    f"sample {sample}, image {number}: input_ids hold {found[index]} image tokens "
                    f"but its size {grids[index][0] * CROP_SIZE}x{grids[index][1] * CROP_SIZE} "
                    f"needs {expected[index]}"
                )
            index += 1
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ImageTokenMismatchError(
            f"image features and image tokens do not match: {shown}",
            hint="a sequence cut inside an image, or placeholders that do not match the images",
        )
