"""Phi-3.5-vision for phiv: configuration, model and image embedding, no remote code.

``from phiv_train.model import Phi3VForCausalLM, Phi3VConfig``. Importing this package
also registers ``model_type`` "phi3_v" with ``AutoConfig`` and ``AutoModelForCausalLM``.
The test double (a tiny random checkpoint) is :func:`phiv_train.model.tiny.write_tiny_checkpoint`.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM

from phiv_train.model.configuration import Phi3VConfig
from phiv_train.model.errors import CheckpointError, ImageTokenMismatchError, ModelConfigError
from phiv_train.model.image_embedding import Phi3VImageEmbedding, image_token_counts
from phiv_train.model.modeling import Phi3VForCausalLM, Phi3VModel, Phi3VPreTrainedModel


def _register_auto_classes() -> None:
    try:
        AutoConfig.register(Phi3VConfig.model_type, Phi3VConfig)
        AutoModelForCausalLM.register(Phi3VConfig, Phi3VForCausalLM)
    except ValueError:
        # Already registered (the module was imported under another name, or reloaded).
        pass


_register_auto_classes()

__all__ = [
    "CheckpointError",
    "ImageTokenMismatchError",
    "ModelConfigError",
    "Phi3VConfig",
    "Phi3VForCausalLM",
    "Phi3VImageEmbedding",
    "Phi3VModel",
    "Phi3VPreTrainedModel",
    "image_token_counts",
]
