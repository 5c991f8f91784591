"""Typed parameter blocks: one per pipeline, validated before any node runs.

The top-level key of each block is the pipeline that reads it (``runtime`` is read by hooks).
Library dataclasses are validated directly by pydantic, so their field lists are written once.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from niwt_pipeline.core.errors import InputError


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuntimeParams(_Block):
    """Seeding, threads and determinism for a run."""

    seed: int = 0
    num_threads: int | Literal["auto"] = "auto"
    deterministic: bool = True

    def resolved_threads(self) -> int:
        """``auto``: one thread on a machine with two cores or fewer, else all but one."""
        if self.num_threads != "auto":
            return max(1, int(self.num_threads))
        cores = os.cpu_count() or 1
        return 1 if cores <= 2 else cores - 1


class IngestionParams(_Block):
    """Which classes to keep and how hard to check the images."""

    classes: Literal["all", "present"] | list[str] = "all"
    check_images: bool = True


def _schemas() -> dict[str, Any]:
    """Block name -> pydantic model or library dataclass (imported lazily: torch is heavy)."""
    from niwt_pipeline.pipelines.backbone.nodes import BackboneParams
    from niwt_pipeline.pipelines.explanation.nodes import ExplanationParams
    from niwt_pipeline.pipelines.extraction.nodes import ExtractionParams
    from niwt_pipeline.pipelines.mapping.nodes import MappingParams
    from niwt_pipeline.pipelines.transfer.nodes import TransferParams
    from niwt_pipeline.pipelines.validation.nodes import ValidationParams

    return {
        "runtime": RuntimeParams,
        "ingestion": IngestionParams,
        "backbone": BackboneParams,
        "extraction": ExtractionParams,
        "mapping": MappingParams,
        "transfer": TransferParams,
        "validation": ValidationParams,
        "explanation": ExplanationParams,
    }


def validate_block(name: str, schema: Any, values: Any) -> Any:
    """Validate one block, raising :class:`InputError` that names every bad key."""
    if dataclasses.is_dataclass(schema) and isinstance(values, dict):
        known = {f.name for f in dataclasses.fields(schema)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(
                f"parameters [{name}]: unknown key(s) {unknown}; expected some of {sorted(known)}"
            )
    try:
        return TypeAdapter(schema).validate_python(values or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{name}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InputError(f"parameters [{name}]: {problems}") from None


def validate_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """Validate every known block present in ``params``; return the typed blocks."""
    return {
        name: validate_block(name, schema, params[name])
        for name, schema in _schemas().items()
        if name in params
    }


def runtime_settings(params: dict[str, Any]) -> RuntimeParams:
    """The ``runtime`` block, with defaults where it is absent."""
    return validate_block("runtime", RuntimeParams, params.get("runtime", {}))


__all__ = ["IngestionParams", "RuntimeParams", "validate_block", "validate_parameters"]
