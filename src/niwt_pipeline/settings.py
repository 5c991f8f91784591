"""Project settings (see Kedro's configuration docs for the defaults)."""

from __future__ import annotations

import warnings

# Third-party notices a user can do nothing about (they concern the libraries' own calls),
# filtered so that the warnings that remain are read.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated")
warnings.filterwarnings("ignore", message=r"Support for class-based `config` is deprecated")
warnings.filterwarnings("ignore", message=r".*An input example was not provided")


def _import_kedro_mlflow_quietly() -> None:
    """Import kedro-mlflow with one notice dropped: mlflow warns, when kedro-mlflow's
    ``KedroPipelineModel`` class is defined, that its ``predict`` has no type hints. mlflow
    raises that notice inside its own ``simplefilter("once")``, which no filter set here can
    override, so the import runs once with a ``showwarning`` that drops that message only."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if "Add type hints to the `predict` method" not in str(message):
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        import kedro_mlflow.mlflow  # noqa: F401


_import_kedro_mlflow_quietly()

from niwt_pipeline.hooks import (  # noqa: E402 - after the filters
    LineageHook,
    RuntimeHook,
    StageTimingHook,
    TypedParamsMlflowHook,
    UpstreamCheckHook,
)

# Hooks run in LIFO order; each one owns a single cross-cutting concern.  kedro-mlflow's
# own hook instance is replaced by a subclass that logs typed parameter blocks flattened.
HOOKS = (
    TypedParamsMlflowHook(),
    StageTimingHook(),
    RuntimeHook(),
    UpstreamCheckHook(),
    LineageHook(),
)
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow",)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `--params backbone.epochs=3` keeps the sibling keys of `backbone`.
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
}
