"""Cross-cutting concerns, one per hook class: upstream checks, runtime setup, timing, and
MLflow's parameter logging of typed parameter blocks.

Parameters themselves are validated by Kedro (typed ``params:`` inputs of the nodes, see
:mod:`niwt_pipeline.params`)."""

from __future__ import annotations

import functools
import logging
import os
import random
import resource
import time
from collections.abc import Callable, Iterable
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro_mlflow.framework.hooks import MlflowHook

logger = logging.getLogger(__name__)


class UpstreamCheckHook:
    """Fails fast, naming the pipeline to run first, when a run's inputs were never produced.

    ``kedro run --pipelines=transfer`` on a fresh clone would otherwise fail deep inside a
    node; this checks every free input of the pipeline before anything runs (``tryfirst``:
    also before other plugins' hooks, so no MLflow run is opened for a run that cannot start).
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        from niwt_pipeline.core.errors import InputError

        missing = [
            name
            for name in sorted(pipeline.inputs())
            if not name.startswith("params:")
            and name != "parameters"
            and name in catalog
            and not catalog.exists(name)
        ]
        if missing:
            raise InputError(missing_inputs_message(missing, catalog, run_params))
        if "images" in pipeline.inputs() and "images" not in pipeline.all_outputs():
            _check_image_paths(catalog, run_params)


def _check_image_paths(catalog: Any, run_params: dict[str, Any]) -> None:
    """The image paths ingestion saved still exist (a moved or renamed project or dataset
    folder leaves them pointing nowhere).

    Raises:
        InputError: naming the first missing path and the command that re-ingests.
    """
    from pathlib import Path

    from niwt_pipeline.core.errors import InputError

    images = catalog.load("images")
    if len(images) and not Path(images["path"].iloc[0]).is_file():
        raise InputError(
            f"the image paths saved by ingestion no longer exist (first: "
            f"{images['path'].iloc[0]}): was the project or the dataset folder moved or "
            f"renamed? Re-ingest and re-run what follows:\n  kedro run{_same_options(run_params)}"
        )


def missing_inputs_message(missing: list[str], catalog: Any, run_params: dict[str, Any]) -> str:
    """What to do about inputs no run has saved: one command that runs, in order, every
    pipeline that makes them (and what those need in turn), with the user's ``--env`` and
    ``--params``; and, for an input no pipeline makes, where it was looked for."""
    producers = _producers(_every_pipeline())
    lines = []
    for name in missing:
        if name in producers:
            lines.append(f"  - {name}: made by the `{producers[name]}` pipeline")
        else:
            kind = "dataset folder" if name == "raw_source" else "input"
            where = _where(catalog, name)
            lines.append(f"  - {name}: {kind} not found: {where}; create it or fix the path")
    order = pipelines_to_run(
        missing,
        lambda i: not i.startswith("params:") and i in catalog and not catalog.exists(i),
    )
    text = "this run needs inputs that do not exist yet:\n" + "\n".join(lines)
    if order:
        text += f"\nRun first:\n  {_run_command(order, run_params)}"
    return text


def pipelines_to_run(start: Iterable[str], redo: Callable[[str], bool]) -> list[str]:
    """The pipelines that make the datasets ``start`` and, in turn, those of their inputs
    for which ``redo`` is true, in an order where each comes after those it reads from."""
    pipelines = _every_pipeline()
    producers = _producers(pipelines)
    needed: set[str] = set()
    queue = list(start)
    while queue:
        producer = producers.get(queue.pop())
        if producer is None or producer in needed:
            continue
        needed.add(producer)
        queue.extend(i for i in pipelines[producer].inputs() if redo(i))
    return [n for n in _pipeline_order(pipelines) if n in needed]


def _producers(pipelines: dict[str, Any]) -> dict[str, str]:
    """Dataset name -> the pipeline that makes it."""
    return {o: name for name, pipe in pipelines.items() for o in pipe.all_outputs()}


def _run_command(pipelines: list[str], run_params: dict[str, Any]) -> str:
    """``kedro run --pipelines=a,b`` with the user's ``--env`` and ``--params``."""
    return f"kedro run --pipelines={','.join(pipelines)}{_same_options(run_params)}"


def _where(catalog: Any, name: str) -> str:
    try:
        described = catalog[name]._describe()
    except Exception:  # noqa: BLE001 - a description is only a courtesy
        return "no description"
    paths = [str(v) for k, v in described.items() if k in ("path", "filepath", "root")]
    return ", ".join(paths) or str(described)


def _pipeline_order(pipelines: dict[str, Any]) -> list[str]:
    """The pipelines in an order where each comes after those whose outputs it reads."""
    made_by = _producers(pipelines)
    after = {
        n: {made_by[i] for i in p.inputs() if i in made_by} - {n} for n, p in pipelines.items()
    }
    order: list[str] = []
    while len(order) < len(pipelines):
        ready = sorted(n for n in pipelines if n not in order and after[n] <= set(order))
        if not ready:  # a cycle: keep the rest in name order
            ready = sorted(n for n in pipelines if n not in order)
        order.extend(ready[:1])
    return order


def _same_options(run_params: dict[str, Any]) -> str:
    """`` --env=<env> --params=<k=v,...>`` as the user gave them (nothing for defaults)."""
    options = ""
    env = run_params.get("env")
    if env:
        options += f" --env={env}"
    params = run_params.get("runtime_params") or run_params.get("extra_params") or {}
    flat = _flatten(params)
    if flat:
        options += " --params=" + ",".join(f"{k}={v}" for k, v in flat.items())
    return options


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@functools.cache
def _every_pipeline() -> dict[str, Any]:
    """Every named pipeline of the project (Kedro's registry, and ``find_pipelines``, hold
    only the pipelines being run)."""
    import importlib
    import pkgutil

    package = importlib.import_module("niwt_pipeline.pipelines")
    return {
        info.name: importlib.import_module(f"{package.__name__}.{info.name}").create_pipeline()
        for info in pkgutil.iter_modules(package.__path__)
        if info.ispkg
    }


#: The ingestion outputs every later output derives from; their content is the lineage.
LINEAGE_ROOTS = ("images", "classes")
LINEAGE_FILE = "lineage.json"


class LineageHook:
    """Keeps a partial run from mixing outputs of different ingestions.

    Every output a run saves is recorded in ``<data folder>/lineage.json`` with the
    fingerprint (SHA-256 of the files) of the ingestion tables it was made from. A later run
    that reads saved outputs checks them against the tables on disk now, and stops, naming
    the outputs and the pipelines to re-run, when one was made from another ingestion (e.g.
    ``ingestion`` re-run with other classes, then ``transfer`` alone).
    """

    def __init__(self) -> None:
        self._record: dict[str, str] = {}
        self._file: Any = None
        self._stamp: str | None = None

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        from niwt_pipeline.core.errors import InputError

        self._file, self._stamp = _lineage_file(catalog), _ingestion_stamp(catalog)
        self._record = _read_json(self._file) if self._file else {}
        made_here = pipeline.all_outputs()
        if any(root in made_here for root in LINEAGE_ROOTS):
            self._stamp = None  # new tables: everything of this run gets their stamp
            return
        if self._stamp is None:
            return
        stale = sorted(n for n in pipeline.inputs() if n not in made_here and self._is_stale(n))
        if stale:
            order = pipelines_to_run(stale, self._is_stale)
            raise InputError(
                "these saved outputs were made from another ingestion than the tables in "
                f"{self._file.parent} now: {', '.join(stale)}; re-run the pipelines that "
                f"make them first:\n  {_run_command(order, run_params)}"
            )

    def _is_stale(self, name: str) -> bool:
        recorded = self._record.get(name)
        return bool(recorded) and recorded != self._stamp

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        if self._file is not None:
            self._record[dataset_name] = self._stamp or ""

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._write(catalog)

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], catalog: Any) -> None:
        self._write(catalog)  # what was saved before the error is on disk: record it

    def _write(self, catalog: Any) -> None:
        if self._file is None:
            return
        stamp = _ingestion_stamp(catalog) or ""
        record = {k: (v or stamp) for k, v in self._record.items()}
        if record:
            _write_json(self._file, record)


def _lineage_file(catalog: Any) -> Any:
    from pathlib import Path

    try:
        images = Path(str(catalog["images"]._filepath))
    except Exception:  # noqa: BLE001 - a catalog without the canonical tables: no lineage
        return None
    return images.parent.parent / LINEAGE_FILE


def _ingestion_stamp(catalog: Any) -> str | None:
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    for name in LINEAGE_ROOTS:
        try:
            path = Path(str(catalog[name]._filepath))
        except Exception:  # noqa: BLE001
            return None
        if not path.is_file():
            return None
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _read_json(path: Any) -> dict[str, str]:
    import json

    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def _write_json(path: Any, record: dict[str, str]) -> None:
    import json

    from niwt_pipeline.core.data.atomic import replaced_atomically

    with replaced_atomically(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")


class InputErrorEcho(logging.Filter):
    """Drops what is logged about a run that failed on bad input while the error is in
    flight: Kedro's "Node ... failed with error" line, and kedro-mlflow's notices that the
    pipeline "is no longer a 'PipelineML' object", raised when Kedro filters the pipeline to
    suggest a resume command.  The project's ``kedro run`` reports the error once, with its
    fix (:mod:`niwt_pipeline.cli`).  The records are logged inside an ``except`` block, so
    the exception in flight tells which it is; bugs keep every line."""

    def filter(self, record: logging.LogRecord) -> bool:
        import sys

        from niwt_pipeline.cli import input_error_of

        failing = sys.exc_info()[1]
        return failing is None or input_error_of(failing) is None


#: The loggers whose records about a failed run :class:`InputErrorEcho` filters.
_ECHO_LOGGERS = ("kedro.pipeline.node", "kedro_mlflow.pipeline.pipeline_ml")


class RuntimeHook:
    """Seeds every random generator and sets torch's thread count from ``params:runtime``;
    silences Kedro's echo of input errors (:class:`InputErrorEcho`)."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        import numpy as np
        import torch

        from niwt_pipeline.params import RuntimeParams

        for name in _ECHO_LOGGERS:
            echo_logger = logging.getLogger(name)
            if not any(isinstance(f, InputErrorEcho) for f in echo_logger.filters):
                echo_logger.addFilter(InputErrorEcho())
        parameters = _load_params(catalog)
        _check_blocks(parameters, run_params)
        settings = _runtime_settings(parameters, RuntimeParams)
        random.seed(settings.seed)
        np.random.seed(settings.seed)
        torch.manual_seed(settings.seed)
        torch.set_num_threads(settings.resolved_threads())
        torch.use_deterministic_algorithms(settings.deterministic, warn_only=True)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        logger.info(
            "runtime: seed %d, %d torch thread(s), deterministic=%s",
            settings.seed,
            torch.get_num_threads(),
            settings.deterministic,
        )


def _check_blocks(parameters: dict[str, Any], run_params: dict[str, Any]) -> None:
    """An unknown top-level parameter (e.g. ``--params=predcit.top_k=5``) is a typo: stop.

    Known are the parameter blocks and the values the catalog reads with
    ``${runtime_params:<name>}`` (dataset roots such as ``own_root``).

    Raises:
        InputError: naming the unknown keys and the known ones.
    """
    import difflib
    import re
    from pathlib import Path

    from niwt_pipeline.core.errors import InputError
    from niwt_pipeline.params import BLOCKS

    conf = Path(run_params.get("project_path") or ".") / "conf"
    catalog_keys = {
        m
        for path in conf.glob("*/catalog*.yml")
        for m in re.findall(r"runtime_params:([A-Za-z0-9_]+)", path.read_text(encoding="utf-8"))
    }
    known = set(BLOCKS) | catalog_keys
    unknown = sorted(set(parameters) - known)
    if unknown:
        hints = [
            f"{u!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            for u in unknown
            for close in [difflib.get_close_matches(u, sorted(known), n=1)]
        ]
        raise InputError(
            f"unknown parameter block(s) {', '.join(hints)}; the blocks are "
            f"{sorted(BLOCKS)} and the dataset locations {sorted(catalog_keys)}"
        )


class StageTimingHook:
    """Measures each node's wall time and the process's peak memory.

    Each node's seconds go to the ``stage_timing_metrics`` catalog entry (MLflow) as the node
    finishes; at the end of the run all timings, the peak memory reached by the end of each
    node (``stage_peak_rss_mb``, so the node that raised it shows) and the run's peak go to
    ``run_timings``.
    """

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self.timings: dict[str, float] = {}
        self.peaks: dict[str, float] = {}

    @hook_impl
    def before_pipeline_run(self) -> None:
        self.timings = {}
        self.peaks = {}

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Any, catalog: Any) -> None:
        seconds = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        self.timings[node.name] = round(seconds, 3)
        self.peaks[node.name] = round(peak_rss_mb(), 1)
        logger.info(
            "node %s took %.1f s (peak RSS %.0f MB)", node.name, seconds, self.peaks[node.name]
        )
        if "stage_timing_metrics" in catalog:
            catalog.save("stage_timing_metrics", {node.name: {"value": seconds, "step": 0}})

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], catalog: Any) -> None:
        summary = {
            "stage_seconds": self.timings,
            "stage_peak_rss_mb": self.peaks,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        logger.info(
            "run finished: %.1f s in nodes, peak RSS %.0f MB",
            sum(self.timings.values()),
            summary["peak_rss_mb"],
        )
        if "run_timings" in catalog:
            catalog.save("run_timings", summary)


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def _runtime_settings(params: dict[str, Any], model: Any) -> Any:
    """The ``runtime`` block as its model; a bad value is an input error naming the key."""
    from pydantic import ValidationError

    from niwt_pipeline.core.errors import InputError

    try:
        return model.model_validate(params.get("runtime") or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"runtime.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InputError(f"parameters [runtime]: {problems}") from None


class TypedParamsMlflowHook(MlflowHook):
    """kedro-mlflow's hook, logging typed parameter blocks as flattened parameters.

    Kedro hands nodes their ``params:<block>`` inputs as pydantic models (see
    :mod:`niwt_pipeline.params`); kedro-mlflow flattens only dicts, so it would log a whole
    block as one string.  This subclass turns each model back into its plain dict before
    kedro-mlflow logs it (``backbone.train.lr`` etc.); everything else is kedro-mlflow's.
    Registered in ``settings.py`` in place of the plugin's own instance.
    """

    @hook_impl
    def before_node_run(
        self, node: Any, catalog: Any, inputs: dict[str, Any], is_async: bool
    ) -> None:
        plain = {name: _plain(value) for name, value in inputs.items()}
        super().before_node_run(node, catalog, plain, is_async)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """kedro-mlflow logs the inference pipeline bound to ``pipeline`` (if any) as an
        MLflow model; this registers it under ``serving.registered_model_name`` too."""
        from kedro_mlflow.pipeline.pipeline_ml import PipelineML

        from niwt_pipeline.params import ServingParams

        if isinstance(pipeline, PipelineML):
            serving = ServingParams.model_validate(_load_params(catalog).get("serving") or {})
            kwargs = dict(pipeline.log_model_kwargs)
            if serving.registered_model_name:
                kwargs["registered_model_name"] = serving.registered_model_name
            pipeline.log_model_kwargs = kwargs
        super().after_pipeline_run(run_params, pipeline, catalog)


def _plain(value: Any) -> Any:
    """A pydantic model or dataclass as a JSON-ready dict; anything else unchanged."""
    import dataclasses

    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _load_params(catalog: Any) -> dict[str, Any]:
    try:
        return catalog.load("parameters")
    except Exception:  # noqa: BLE001 - a catalog without parameters gets the defaults
        return {}
