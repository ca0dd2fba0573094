"""The optional ``"cosmos_assets"`` block of a prompt file: which model runs it, and each model's own settings.

The rest of a prompt file is a Cosmos-Transfer1 spec (:mod:`cosmos_assets.spec`); this block is ours. The backends
it does not name ignore it, and no model's spec ever contains it (docs/models.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator
from pydantic_core import PydanticCustomError

MODEL_BLOCK = "cosmos_assets"
MODEL_BLOCK_FIELDS: tuple[str, ...] = ("model", "cosmos-transfer2.5", "cosmos3")


def _check_model_name(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("model", "must be text: cosmos-transfer1, cosmos-transfer2.5 or cosmos3")
    from cosmos_assets.models import backend_named  # the backends read this module: import on use

    try:
        return backend_named(value).name
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

    def settings_for(self, model: str) -> dict[str, Any]:
        """The settings block of ``model`` (empty when absent)."""
        return dict({"cosmos-transfer2.5": self.transfer2_5, "cosmos3": self.cosmos3}.get(model) or {})
