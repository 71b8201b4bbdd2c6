"""Phi-3.5-vision processing: images, prompts and labels, batching.

- :class:`Phi3VImageProcessor`: images -> ``pixel_values``, ``image_sizes``, ``num_img_tokens``.
- :class:`Phi3VProcessor`: a record -> ``input_ids``, ``labels``, pixels (training) or a
  generation prompt; length policy; ``from_pretrained(checkpoint_dir)``.
- :class:`Phi3VCollator`: samples -> a padded batch (its docstring is the batch contract).
"""

from phiv_train.processing.collator import Phi3VCollator
from phiv_train.processing.conversation import (
    IGNORE_INDEX,
    TRUNCATION_POLICIES,
    RecordError,
    SampleTooLongError,
    SpecialTextError,
    UnlabeledRecordError,
    conversation_text,
)
from phiv_train.processing.image import (
    CLIP_MEAN,
    CLIP_STD,
    Phi3VImageProcessor,
    load_image,
    to_model_mode,
)
from phiv_train.processing.processor import Phi3VProcessor, load_record_images

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IGNORE_INDEX",
    "TRUNCATION_POLICIES",
    "Phi3VCollator",
    "Phi3VImageProcessor",
    "Phi3VProcessor",
    "RecordError",
    "SampleTooLongError",
    "SpecialTextError",
    "UnlabeledRecordError",
    "conversation_text",
    "load_image",
    "load_record_images",
    "to_model_mode",
]
