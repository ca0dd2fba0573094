"""The backends by name: one per model of :data:`cosmos_assets.models.names.MODEL_NAMES`, in that order.

A new backend adds its module, its contract and one entry here."""

from __future__ import annotations

from functools import lru_cache

from cosmos_assets.models.base import ModelBackend
from cosmos_assets.models.cosmos3 import Cosmos3Backend
from cosmos_assets.models.names import canonical_name
from cosmos_assets.models.preview import PreviewBackend
from cosmos_assets.models.transfer1 import Transfer1Backend
from cosmos_assets.models.transfer2_5 import Transfer25Backend


@lru_cache(maxsize=1)
def backends() -> dict[str, ModelBackend]:
    """Every backend by name, in the order of :data:`cosmos_assets.models.names.MODEL_NAMES`."""
    everyone = (PreviewBackend(), Transfer1Backend(), Transfer25Backend(), Cosmos3Backend())  # as MODEL_NAMES
    return {backend.name: backend for backend in everyone}


def backend_named(name: str) -> ModelBackend:
    """The backend called ``name`` (or an alias: transfer1, transfer2.5); a ValueError listing the known ones otherwise."""
    return backends()[canonical_name(name)]
