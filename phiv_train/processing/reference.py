"""A straightforward implementation of Phi-3.5-vision's image processing, for checking.

It follows the reference processor step by step, with PIL and torch doing what torchvision's
``resize``, ``pad``, ``ToTensor`` and ``Normalize`` do (torchvision does not import beside the
CPU torch build used here): convert to RGB, transpose portraits, bilinear resize, white
centred padding, transpose back, to float, normalise, bicubic global view, row-major crops,
concatenate, zero-pad. Tests and ``bench/processor.py`` compare the fast
:class:`~phiv_train.processing.Phi3VImageProcessor` against it, bit for bit. Not used in
training.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from phiv_train.processing.image import CLIP_MEAN, CLIP_STD, to_model_mode

CROP = 336


def reference_process_image(image: Image.Image, num_crops: int) -> tuple[torch.Tensor, list[int]]:
    """Process one image the straightforward way.

    Args:
        image: a Pillow image (any mode; converted like the fast path converts it).
        num_crops: the most 336-pixel crops.

    Returns:
        ``(views, [padded_height, padded_width])`` with ``views`` float32
        ``(num_crops + 1, 3, 336, 336)``.
    """
    image = to_model_mode(image).convert("RGB")
    width, height = image.size
    transposed = width < height
    if transposed:
        image = image.transpose(Image.Transpose.TRANSPOSE)
        width, height = image.size
    ratio = width / height
    scale = 1
    while scale * np.ceil(scale / ratio) <= num_crops:
        scale += 1
    scale -= 1
    new_width = int(scale * CROP)
    new_height = max(1, int(new_width / ratio))
    image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    target = int(math.ceil(new_height / CROP) * CROP)
    top = int((target - new_height) / 2)
    padded = Image.new("RGB", (new_width, target), (255, 255, 255))
    padded.paste(image, (0, top))
    if transposed:
        padded = padded.transpose(Image.Transpose.TRANSPOSE)

    tensor = torch.from_numpy(np.array(padded, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    tensor = tensor.to(torch.float32).div(255)
    mean = torch.as_tensor(CLIP_MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(CLIP_STD, dtype=torch.float32).view(-1, 1, 1)
    tensor.sub_(mean).div_(std)

    global_view = F.interpolate(tensor.unsqueeze(0).float(), size=(CROP, CROP), mode="bicubic",
                                align_corners=False)
    height, width = tensor.shape[1:]
    crops = (tensor.reshape(1, 3, height // CROP, CROP, width // CROP, CROP)
             .permute(0, 2, 4, 1, 3, 5).reshape(-1, 3, CROP, CROP).contiguous())
    views = torch.cat([global_view, crops], dim=0)
    missing = num_crops + 1 - views.shape[0]
    if missing > 0:
        views = torch.cat([views, torch.zeros(missing, 3, CROP, CROP)], dim=0)
    return views, [height, width]


def reference_process_images(images: list[Image.Image], num_crops: int) -> dict:
    """:func:`reference_process_image` over a list, stacked like the processor's output."""
    results = [reference_process_image(image, num_crops) for image in images]
    return {
        "pixel_values": torch.stack([views for views, _ in results]),
        "image_sizes": torch.tensor([size for _, size in results], dtype=torch.int64),
    }
