"""The model names: each backend's canonical name, in order, and the short names accepted for them.

Imports nothing from the package, so the prompt file's ``cosmos_assets`` block, the settings and the pool file spell a
model's name without loading a backend (the backends read the prompt file's modules). A new backend adds its name
here; :func:`cosmos_assets.models.backends` holds one backend per name, in this order.
"""

from __future__ import annotations

MODEL_NAMES: tuple[str, ...] = ("preview", "cosmos-transfer1", "cosmos-transfer2.5", "cosmos3")

# Short names accepted wherever a model is named (COSMOS_MODEL, run config, prompt block, --model).
ALIASES: dict[str, str] = {"transfer1": "cosmos-transfer1", "transfer2.5": "cosmos-transfer2.5", "cosmos-3": "cosmos3"}


def canonical_name(name: str) -> str:
    """``name`` (any case, or an alias) spelled as its backend is; a ValueError listing the known ones otherwise."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in MODEL_NAMES:
        raise ValueError(f"model {name!r} is not a backend here: use one of {', '.join(MODEL_NAMES)}")
    return key
