"""The record format: the one source of truth for what a phiv JSONL line is.

One JSON object per line::

    {"id": "val-0000000300", "source": "ucf101",
     "conversations": [{"images": ["val/BabyCrawling/v_BabyCrawling_g21_c04.0.jpg", ...],
                        "user": "Classify the video ...", "assistant": "BabyCrawling"}]}

Every line written by the original Phi-3.5-vision recipe validates unchanged. Everything
phiv adds is optional: ``meta`` (a free object: all DocVQA answers, frame provenance, ...)
and an unlabeled last turn (``"assistant": null``) for evaluation sets without answers.

Pydantic checks *shape* here. *Meaning* (files exist, ids are unique, no special-token
strings in text, paths stay inside the images root) lives in ``phiv_data.validate`` rules.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from phiv_data._version import SCHEMA_VERSION as SCHEMA_VERSION  # re-exported


NonEmptyText = Annotated[str, StringConstraints(min_length=1)]


class Turn(BaseModel):
    """One user message (with its images) and the assistant's answer."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    images: list[NonEmptyText] = Field(
        default_factory=list,
        description="Image paths relative to the images root, with '/' separators, shown "
        "before the user text of this turn, in order.",
    )
    user: NonEmptyText = Field(description="The user's message, without image placeholders.")
    assistant: NonEmptyText | None = Field(
        description="The answer to learn. null only in the last turn of an unlabeled "
        "evaluation record (for example the DocVQA test split).",
    )


class Record(BaseModel):
    """One training or evaluation example: a conversation of one or more turns."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: NonEmptyText = Field(description="Unique within a dataset; a JSON string.")
    source: str | None = Field(
        default=None, description="Name of the dataset or pipeline this record came from."
    )
    conversations: list[Turn] = Field(min_length=1, description="The turns, in order.")
    meta: dict[str, Any] | None = Field(
        default=None,
        description="Free extension point: evaluation answers, provenance, labels. "
        "Ignored by training.",
    )

    @model_validator(mode="after")
    def _only_last_turn_unlabeled(self) -> Record:
        for index, turn in enumerate(self.conversations[:-1]):
            if turn.assistant is None:
                raise ValueError(
                    f"conversations[{index}].assistant is null: only the last turn of a "
                    "record may be unlabeled"
                )
        return self

    @property
    def images(self) -> list[str]:
        """All image paths of the record, in the order the model sees them."""
        return [path for turn in self.conversations for path in turn.images]

    @property
    def labeled(self) -> bool:
        """False when the last answer is missing (an evaluation-only record)."""
        return self.conversations[-1].assistant is not None

    def to_json_dict(self) -> dict[str, Any]:
        """The record as the JSON object written to a shard (optional fields left out
        when unset, turn keys always present, in the recipe's key order)."""
        data: dict[str, Any] = {"id": self.id}
        if self.source is not None:
            data["source"] = self.source
        data["conversations"] = [
            {"images": list(turn.images), "user": turn.user, "assistant": turn.assistant}
            for turn in self.conversations
        ]
        if self.meta is not None:
            data["meta"] = self.meta
        return data


ROOT_MODELS: dict[str, type[BaseModel]] = {"record": Record}
"""Models exported as JSON Schema files in ``schemas/`` (see ``phiv_data.jsonschema``)."""
