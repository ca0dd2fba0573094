"""What model runs: one backend per model, chosen by name (``COSMOS_MODEL``, or per host).

The backends are imported on first use: :mod:`cosmos_assets.spec` (the prompt file) reads the
Transfer1 flag contract from :mod:`cosmos_assets.models.transfer1_cli`, and the backends read specs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cosmos_assets.models.base import ModelBackend
    from cosmos_assets.models.invocation_keys import InvocationKey


@lru_cache(maxsize=1)
def backends() -> dict[str, "ModelBackend"]:
    """Every backend by name."""
    from cosmos_assets.models.cosmos3 import Cosmos3Backend
    from cosmos_assets.models.preview import PreviewBackend
    from cosmos_assets.models.transfer1 import Transfer1Backend
    from cosmos_assets.models.transfer2_5 import Transfer25Backend

    everyone = (PreviewBackend(), Transfer1Backend(), Transfer25Backend(), Cosmos3Backend())
    return {backend.name: backend for backend in everyone}


# Short names accepted wherever a model is named (COSMOS_MODEL, run config, prompt block, --model).
ALIASES = {"transfer1": "cosmos-transfer1", "transfer2.5": "cosmos-transfer2.5", "cosmos-3": "cosmos3"}


def backend_named(name: str) -> "ModelBackend":
    """The backend called ``name`` (or an alias: transfer1, transfer2.5); a ValueError listing the known ones otherwise."""
    known = backends()
    key = name.strip().lower()
    try:
        return known[ALIASES.get(key, key)]
    except KeyError:
        raise ValueError(f"model {name!r} is not a backend here: use one of {', '.join(known)}") from None


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
