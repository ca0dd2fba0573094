"""What model runs: one backend per model (:mod:`~cosmos_assets.models.registry`), named in
:mod:`~cosmos_assets.models.names`; each model's contract (flags, spec keys, the keys a prompt file may not set) in a
module that loads no backend, so the prompt file reads it while it loads (:mod:`~cosmos_assets.models.refused_keys`)."""
