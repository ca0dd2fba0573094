"""The optional ``"cosmos_assets"`` block of a prompt file: which model runs it, and each model's own settings.

The rest of a prompt file is a Cosmos-Transfer1 spec (:mod:`cosmos_assets.prompts.spec`); this block is ours. The backends
it does not name ignore it, and no model's spec ever contains it (docs/models.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, model_validator
from pydantic_core import PydanticCustomError

from cosmos_assets.models.invocation_keys import invocation_problems
from cosmos_assets.models.names import canonical_name
from cosmos_assets.models.refused_keys import model_invocation_keys

MODEL_BLOCK = "cosmos_assets"
MODEL_SETTINGS: tuple[str, ...] = ("cosmos-transfer2.5", "cosmos3")  # the models with a settings block
MODEL_BLOCK_FIELDS: tuple[str, ...] = ("model", *MODEL_SETTINGS)


def block_invocation_problems(settings: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(``<model>.<key>``, message, value) for each key of a model's settings that its contract says sets
    the invocation; ``settings``: model name -> its block (anything not a dict is left to the block's own checks)."""
    return [
        (f"{model}.{field}", message, value)
        for model, block in settings.items()
        if model in MODEL_SETTINGS and isinstance(block, dict)
        for field, message, value in invocation_problems(block, model_invocation_keys(model))
    ]


def _check_model_name(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("model", "must be text: cosmos-transfer1, cosmos-transfer2.5 or cosmos3")
    try:
        return canonical_name(value)
    except ValueError as error:
        raise PydanticCustomError("model", str(error)) from None


class ModelBlock(BaseModel):
    """The optional ``"cosmos_assets"`` block of a prompt file: which model runs it and each model's own settings.

    Ignored by the backends it does not name; never written into any model's spec (docs/models.md).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: Annotated[str, PlainValidator(_check_model_name)] | None = None
    transfer2_5: dict[str, Any] | None = Field(default=None, alias="cosmos-transfer2.5")
    cosmos3: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _no_invocation_keys(self) -> ModelBlock:
        """A model's settings may not set how it is invoked (its contract's invocation keys: outputs, inputs, mode,
        checkpoints, GPUs); ``model`` and the launch settings each backend reads are the block's own."""
        problems = block_invocation_problems({model: self.settings_for(model) for model in MODEL_SETTINGS})
        if problems:
            summary = "; ".join(f"{p[0]}: {p[1]}" for p in problems)
            raise PydanticCustomError("spec_rules", "{summary}", {"summary": summary, "problems": problems})
        return self

    def settings_for(self, model: str) -> dict[str, Any]:
        """The settings block of ``model`` (empty when absent)."""
        return dict({"cosmos-transfer2.5": self.transfer2_5, "cosmos3": self.cosmos3}.get(model) or {})
