"""What model runs: one backend per model, chosen by name (``COSMOS_MODEL``, or per host); the names are in
:mod:`cosmos_assets.models.names`.

The backends are imported on first use: :mod:`cosmos_assets.prompts.spec` (the prompt file) imports modules of this package
(the invocation keys, the Transfer1 flag contract), which runs this file first, and the backends read specs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from cosmos_assets.models.names import canonical_name

if TYPE_CHECKING:
    from cosmos_assets.models.base import ModelBackend
    from cosmos_assets.models.invocation_keys import InvocationKey


@lru_cache(maxsize=1)
def backends() -> dict[str, "ModelBackend"]:
    """Every backend by name, in the order of :data:`cosmos_assets.models.names.MODEL_NAMES`."""
    from cosmos_assets.models.cosmos3 import Cosmos3Backend
    from cosmos_assets.models.preview import PreviewBackend
    from cosmos_assets.models.transfer1 import Transfer1Backend
    from cosmos_assets.models.transfer2_5 import Transfer25Backend

    everyone = (PreviewBackend(), Transfer1Backend(), Transfer25Backend(), Cosmos3Backend())  # as MODEL_NAMES
    return {backend.name: backend for backend in everyone}


def backend_named(name: str) -> "ModelBackend":
    """The backend called ``name`` (or an alias: transfer1, transfer2.5); a ValueError listing the known ones otherwise."""
    return backends()[canonical_name(name)]


@lru_cache(maxsize=1)
def prompt_file_invocation_keys() -> dict[str, "InvocationKey"]:
    """Keys the top level of a prompt file may not carry: every model's invocation keys, as any model may run it
    (the run's config can pick another than the file's block). Each backend classifies its own; the preview shares
    Transfer1's command line, and where two models share a key the first one's wording is kept."""
    keys: dict[str, "InvocationKey"] = {}
    for backend in backends().values():
        if not backend.is_preview:
            for name, key in backend.invocation_keys().items():
                keys.setdefault(name, key)
    return keys
