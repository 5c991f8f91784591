"""The parameter models: one pydantic model per parameter block, all in one place.

The top-level key of each block is the pipeline that reads it (``runtime`` is read by the
hooks).  Nodes declare their ``params:<block>`` inputs with these types, so Kedro validates
and builds them before any node runs (Kedro's parameter validation): an unknown key or a
bad value stops the run with a message naming it.  Where a library function takes a plain
dataclass configuration, the model converts to it (``recipe()``, ``config()``, ...), so
each decision has one parameter.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from niwt_pipeline.core.baselines import BaselineConfig
from niwt_pipeline.core.compatibility import CompatibilityConfig
from niwt_pipeline.core.extraction import ExtractionConfig
from niwt_pipeline.core.generative import GeneratorConfig
from niwt_pipeline.core.mapper import MapperConfig
from niwt_pipeline.core.selection import CRITERIA, expand_grid
from niwt_pipeline.core.trained import BackboneRecipe
from niwt_pipeline.core.training import TrainConfig
from niwt_pipeline.core.transfer.config import TransferConfig, paper_config
from niwt_pipeline.core.transfer.reference import ReferenceConfig
from niwt_pipeline.core.transfer.variants import make_variant
from niwt_pipeline.core.trunk import TrunkConfig
from niwt_pipeline.core.validation import SearchConfig


class _Block(BaseModel):
    """A parameter block: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class RuntimeParams(_Block):
    """``params:runtime``: seeding, threads and determinism for a run (read by the hooks)."""

    seed: int = 0
    num_threads: int | Literal["auto"] = "auto"
    deterministic: bool = True

    def resolved_threads(self) -> int:
        """``auto``: every core this process may use on a machine with two cores or fewer,
        else all but one (left to image decoding and the rest of the system).  On a machine
        that other jobs keep busy, ``runtime.num_threads: 1`` can be several times faster."""
        if self.num_threads != "auto":
            return max(1, int(self.num_threads))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = cores or os.cpu_count() or 1
        return cores if cores <= 2 else cores - 1


class IngestionParams(_Block):
    """``params:ingestion``: which classes to keep and how hard to check the images."""

    classes: Literal["all", "present"] | list[str] = "all"
    check_images: bool = True


class BackboneParams(_Block):
    """``params:backbone``: the network, its importance layer and its seen-class training.

    The validation pipeline trains its backbone with the same recipe (one parameter per
    decision), so it reads this block too.
    """

    arch: str = "small_cnn"
    weights: str | None = None
    layer: str | None = None
    image_size: int | None = Field(None, gt=0)
    crop_fraction: float = Field(1.0, gt=0, le=1)
    augment: bool = False
    holdout_fraction: float = Field(0.15, gt=0, lt=1)
    train: TrainConfig = TrainConfig()
    trunk: TrunkConfig = TrunkConfig()

    def recipe(self) -> BackboneRecipe:
        """The library's :class:`~niwt_pipeline.core.trained.BackboneRecipe`."""
        return BackboneRecipe(
            arch=self.arch,
            weights=self.weights,
            layer=self.layer,
            image_size=self.image_size,
            crop_fraction=self.crop_fraction,
            augment=self.augment,
            train=self.train,
            trunk=self.trunk,
        )


class ExtractionParams(_Block):
    """``params:extraction``.

    ``num_workers``: image-decoding worker processes (decoding, not the network, limits a
    GPU run: about 4.5x more images/s with 8 workers on a 16-core GPU machine).
    ``shard_size``: ``None`` extracts every image in one pass; a number of images (a
    multiple of ``batch_size``, so every batch is the one the unsharded pass would see and
    the merged outputs are bit-identical to it) extracts them in resumable shards.
    """

    batch_size: int = Field(64, ge=1)
    device: str = "auto"
    targets: Literal["gt", "gt_and_pred"] = "gt_and_pred"
    shard_size: int | None = Field(None, ge=1)
    num_workers: int = Field(0, ge=0)

    @field_validator("shard_size")
    @classmethod
    def _whole_batches(cls, value: int | None, info: ValidationInfo) -> int | None:
        batch = info.data.get("batch_size")
        if value is not None and batch:
            ExtractionConfig(batch_size=batch, shard_size=value)  # raises with the fix
        return value

    def config(self, *, sharded: bool = True) -> ExtractionConfig:
        """The library's :class:`~niwt_pipeline.core.extraction.ExtractionConfig`
        (``sharded=False``: one pass, whatever ``shard_size`` says)."""
        return ExtractionConfig(
            batch_size=self.batch_size,
            device=self.device,
            targets=self.targets,
            shard_size=self.shard_size if sharded else None,
            num_workers=self.num_workers,
        )


class MappingParams(_Block):
    """``params:mapping``: the mapper's settings (before the validation's overrides) and the
    ridge strength of the inverse map."""

    mapper: MapperConfig = MapperConfig()
    inverse_ridge_alpha: float = Field(1.0, ge=0)


class ReferenceParams(_Block):
    """Which images NIWT measures importances on while it builds the new rows."""

    images: str = "trainval_seen"  # or a folder of images
    max_images: int | None = Field(None, ge=1)
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    gram_memory_budget_mb: int = Field(1024, ge=0)  # 0: always keep the activations

    def config(self, max_images: int | None = None) -> ReferenceConfig:
        """The library's :class:`~niwt_pipeline.core.transfer.ReferenceConfig`
        (``max_images`` overrides the block's when given)."""
        return ReferenceConfig(
            images=self.images,
            max_images=self.max_images if max_images is None else max_images,
            batch_size=self.batch_size,
            seed=self.seed,
            gram_memory_budget_mb=self.gram_memory_budget_mb,
        )


class BaselineParams(_Block):
    """The baselines' settings: ridge regression to classifier rows
    (``weight_regression``), ESZSL, SAE, ALE, SJE, DeViSE and f-CLSWGAN; a setting left
    ``null`` is chosen by the validation on the pseudo-unseen problem (from
    ``validation.baseline_grid``), a number is used as it is."""

    ridge_alpha: float | None = Field(None, ge=0)
    eszsl_gamma: float | None = Field(None, gt=0)
    eszsl_lambda: float | None = Field(None, gt=0)
    sae_lambda: float | None = Field(None, gt=0)
    ale_lr: float | None = Field(None, gt=0)
    ale_epochs: int | None = Field(None, ge=1)
    sje_lr: float | None = Field(None, gt=0)
    sje_epochs: int | None = Field(None, ge=1)
    devise_lr: float | None = Field(None, gt=0)
    devise_epochs: int | None = Field(None, ge=1)
    fclswgan_n_synthetic: int | None = Field(None, ge=1)

    def config(self) -> BaselineConfig:
        """The library's :class:`~niwt_pipeline.core.baselines.BaselineConfig`."""
        return BaselineConfig(**self.model_dump())


class CompatibilityParams(_Block):
    """ALE's, SJE's and DeViSE's fixed settings (their learning rate and epochs are in
    ``transfer.baselines``); see :class:`~niwt_pipeline.core.compatibility.
    CompatibilityConfig`."""

    batch_size: int = Field(32, ge=1)
    margin: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    normalise_features: bool = True
    init: Literal["gaussian", "zeros"] = "gaussian"
    seed: int = Field(0, ge=0)

    def config(self) -> CompatibilityConfig:
        """The library's config, for ALE (each loss replaces ``loss``, ``lr``, ``epochs``)."""
        return CompatibilityConfig(loss="ale", **self.model_dump())


class TransferParams(_Block):
    """``params:transfer``: the reference images, the configured NIWT settings (``niwt``:
    the base the validation's ``niwt_grid`` varies), whose published settings the faithful
    ``niwt_paper`` row uses (``paper``: ``cub`` or ``awa2``), the baselines' settings
    (``baselines``: chosen by the validation when ``null``), the fixed settings of ALE,
    SJE and DeViSE (``compatibility``) and of f-CLSWGAN (``fclswgan``, its epoch budget
    included; ``n_synthetic`` is ``baselines.fclswgan_n_synthetic``'s)."""

    device: str = "auto"
    paper: Literal["cub", "awa2"] = "awa2"
    reference: ReferenceParams = ReferenceParams()
    niwt: TransferConfig = TransferConfig()
    baselines: BaselineParams = BaselineParams()
    compatibility: CompatibilityParams = CompatibilityParams()
    fclswgan: GeneratorConfig = GeneratorConfig()

    def paper_config(self) -> TransferConfig:
        """The paper's transfer settings for ``paper``
        (:func:`~niwt_pipeline.core.transfer.config.paper_config`), seeded as ``niwt``."""
        return paper_config(self.paper, seed=self.niwt.seed, progress=self.niwt.progress)


class ValidationParams(_Block):
    """``params:validation``.

    Attributes:
        pseudo_unseen_classes: seen classes held out of the validation backbone (a count, or
            a fraction of the seen classes).
        seed: seeds the choice of those classes.
        criterion: how candidates are ranked on the validation problem: ``H_calibrated``
            (at each candidate's best gamma), ``ausuc``, or the ``mean`` of the two.
        reference_max_images: reference images for the validation transfers (a seeded sample
            of the validation backbone's trainval images); ``null`` = as ``transfer.reference``.
        mapper_grid: ``MapperConfig`` field -> values to try.
        niwt_grid: ``TransferConfig`` field (``init`` may also be ``ridge``), ``anchor``
            (``mean_seen`` | ``ridge``) or ``logit_matching`` (``none`` |
            ``seen_negatives``) -> values to try.  The configured ``transfer.niwt`` and the
            paper's settings are always tried too, with each ``logit_matching`` value.
        fusion_grid: weights of ESZSL scores fused into the NIWT scores (0 = NIWT alone).
        baseline_grid: ``transfer.baselines`` setting (``ridge_alpha``, ``eszsl_gamma``,
            ``eszsl_lambda``, ``sae_lambda``) -> values to try when that setting is
            ``null``.
    """

    pseudo_unseen_classes: int | float = Field(0.25, gt=0)
    seed: int = 0
    criterion: str = "mean"
    reference_max_images: int | None = Field(256, ge=1)
    mapper_grid: dict[str, list[Any]] = {}
    niwt_grid: dict[str, list[Any]] = {}
    fusion_grid: list[float] = [0.0]
    baseline_grid: dict[str, list[int | float]] = Field(
        default_factory=lambda: dict(SearchConfig().baseline_grid)
    )

    @field_validator("criterion")
    @classmethod
    def _criterion(cls, value: str) -> str:
        if value not in CRITERIA:
            raise ValueError(f"expected one of {CRITERIA}, got {value!r}")
        return value

    @field_validator("mapper_grid")
    @classmethod
    def _mapper_keys(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        known = set(MapperConfig.__dataclass_fields__)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown MapperConfig field(s) {unknown}; expected {sorted(known)}")
        for candidate in expand_grid(value):
            replace(MapperConfig(), **candidate)  # each value must make a valid config
        return value

    @field_validator("niwt_grid")
    @classmethod
    def _niwt_keys(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if "fusion" in value:
            raise ValueError("put fusion weights in validation.fusion_grid")
        for candidate in expand_grid(value):
            make_variant(TransferConfig(), candidate)  # each value must make a valid variant
        return value

    @field_validator("fusion_grid")
    @classmethod
    def _fusion(cls, value: list[float]) -> list[float]:
        if not value or any(v < 0 for v in value):
            raise ValueError(f"expected one or more weights >= 0, got {value}")
        return value

    @field_validator("baseline_grid", mode="before")
    @classmethod
    def _baseline_grid(cls, value: Any) -> Any:
        """Checked by the library's :class:`SearchConfig` as given, before any type
        coercion, so a misspelt setting is named as unknown whatever its value."""
        if isinstance(value, dict):
            SearchConfig(baseline_grid={**SearchConfig().baseline_grid, **value})  # raises
        return value

    def search(self) -> SearchConfig:
        """The library's :class:`~niwt_pipeline.core.validation.SearchConfig`."""
        return SearchConfig(
            criterion=self.criterion,
            mapper_grid=dict(self.mapper_grid),
            niwt_grid=dict(self.niwt_grid),
            fusion_grid=list(self.fusion_grid),
            baseline_grid={**SearchConfig().baseline_grid, **self.baseline_grid},
        )


class VisualParams(_Block):
    """Which test images get Grad-CAM maps."""

    images_per_class: int = Field(2, ge=1)
    max_classes: int = Field(6, ge=1)  # about half unseen, half seen classes
    alpha: float = Field(0.5, ge=0.0, le=1.0)  # weight of the heat map in the overlay


class ReportParams(_Block):
    """What the HTML report shows."""

    max_neurons: int = Field(24, ge=1)  # rows of the report's neuron-name table


class ExplanationParams(_Block):
    """``params:explanation``."""

    device: str = "auto"
    batch_size: int = Field(64, ge=1)
    top_k: int = Field(3, ge=1)  # dimensions per neuron name / explanation; precision@k
    max_images: int | None = Field(None, ge=1)  # test images explained (seeded sample)
    seed: int = 0
    covariation_l2_normalise: bool = True  # drop each image's importance scale first
    # Textual explanations: the predicted class's prior blended with per-image evidence
    # (niwt_pipeline.core.explain.grounded); "auto" / null: chosen on the validation problem.
    evidence: Literal["auto", "importance", "features"] = "auto"
    evidence_weight: float | None = Field(None, ge=0, le=1)
    evidence_weights: list[float] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    attribute_ridge_alpha: float = Field(1.0, ge=0)  # the attribute predictor's ridge
    contrast_weight: float = Field(0.0, ge=0)  # > 0: why the predicted, not the runner-up
    visual: VisualParams = VisualParams()
    report: ReportParams = ReportParams()

    @field_validator("evidence_weights")
    @classmethod
    def _evidence_weights(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 <= v <= 1 for v in value):
            raise ValueError(f"expected one or more weights in [0, 1], got {value}")
        return value


class PredictParams(_Block):
    """``params:predict``: which images the packaged classifier classifies, and how.

    ``images``: a folder (every image file below it) or a CSV with a ``path`` column
    (relative paths are relative to the CSV's folder); ``null`` classifies the dataset's
    test images (test_seen and test_unseen).
    """

    images: str | None = None
    top_k: int = Field(3, ge=1)  # classes per image
    explain: bool = True  # the textual explanation of the top class
    explanation_dims: int = Field(3, ge=1)  # domain-knowledge dimensions per explanation
    batch_size: int = Field(32, ge=1)
    device: str = "auto"
    gallery_max: int = Field(200, ge=0)  # images shown in predictions.html (the first N)
    gradcam: bool = False  # also a Grad-CAM PNG of the top class per image
    gradcam_alpha: float = Field(0.5, ge=0.0, le=1.0)  # weight of the heat map in the overlay

    @field_validator("images")
    @classmethod
    def _images_exist(cls, value: str | None) -> str | None:
        """A folder, image or CSV that does not exist stops the run before anything runs."""
        if value is not None and not Path(value).exists():
            raise ValueError(
                f"images folder not found: {value} (give a folder of images, an image or a "
                "CSV with a `path` column)"
            )
        return value


class ServingParams(_Block):
    """``params:serving``: where the MLflow model logged with each training run is
    registered (read by the MLflow hook, not by a node)."""

    registered_model_name: str | None = Field("niwt-zero-shot-classifier", min_length=1)


#: Every parameter block and its model (``importance`` and ``export`` take no parameters).
BLOCKS: dict[str, type[BaseModel]] = {
    "runtime": RuntimeParams,
    "ingestion": IngestionParams,
    "backbone": BackboneParams,
    "extraction": ExtractionParams,
    "mapping": MappingParams,
    "transfer": TransferParams,
    "validation": ValidationParams,
    "explanation": ExplanationParams,
    "predict": PredictParams,
    "serving": ServingParams,
}

__all__ = [
    "BLOCKS",
    "BackboneParams",
    "BaselineParams",
    "ExplanationParams",
    "ExtractionParams",
    "IngestionParams",
    "MappingParams",
    "PredictParams",
    "ReferenceParams",
    "ReportParams",
    "RuntimeParams",
    "ServingParams",
    "TransferParams",
    "ValidationParams",
    "VisualParams",
]
