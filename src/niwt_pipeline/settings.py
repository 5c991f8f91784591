"""Project settings (see Kedro's configuration docs for the defaults)."""

from __future__ import annotations

from niwt_pipeline.hooks import (
    ParameterValidationHook,
    RuntimeHook,
    StageTimingHook,
    UpstreamCheckHook,
)

# Hooks run in LIFO order; each one owns a single cross-cutting concern.
HOOKS = (StageTimingHook(), RuntimeHook(), UpstreamCheckHook(), ParameterValidationHook())

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `--params backbone.epochs=3` keeps the sibling keys of `backbone`.
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
}
