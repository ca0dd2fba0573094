"""The keys a prompt file may not carry, over every model: each model's invocation keys, from its contract module.

Reads the contract modules, never a backend, so the prompt file (:mod:`cosmos_assets.prompts.spec`) and its block
(:mod:`cosmos_assets.prompts.model_block`) check them while they load.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from cosmos_assets.models import cosmos3_contract, transfer1_cli, transfer2_5_contract
from cosmos_assets.models.invocation_keys import InvocationKey
from cosmos_assets.models.names import canonical_name

# Each model's own keys, in the order of models/names.py (the preview has Transfer1's command line).
_KEYS_OF: dict[str, Callable[[], dict[str, InvocationKey]]] = {
    "preview": lambda: transfer1_cli.invocation_keys("preview"),
    "cosmos-transfer1": transfer1_cli.invocation_keys,
    transfer2_5_contract.NAME: transfer2_5_contract.invocation_keys,
    cosmos3_contract.NAME: cosmos3_contract.invocation_keys,
}


def model_invocation_keys(model: str) -> dict[str, InvocationKey]:
    """The keys ``model`` (a name or alias) owns: the top level of a prompt file, or its block in ``cosmos_assets``."""
    return _KEYS_OF[canonical_name(model)]()


@lru_cache(maxsize=1)
def prompt_file_invocation_keys() -> dict[str, InvocationKey]:
    """Keys the top level of a prompt file may not carry: every model's invocation keys, as any model may run it
    (the run's config can pick another than the file's block). Where two models share a key the first one's wording
    is kept (the preview's are Transfer1's)."""
    keys: dict[str, InvocationKey] = {}
    for model, keys_of in _KEYS_OF.items():
        if model != "preview":
            for name, key in keys_of().items():
                keys.setdefault(name, key)
    for name, (what, fix) in cosmos3_contract.TOP_LEVEL_REFUSED.items():
        keys.setdefault(name, InvocationKey(cosmos3_contract.NAME, what, fix))
    return keys
