"""Hand-set objects shared by several test files.

Import as ``from tests.helpers import ...``: with ``--import-mode=importlib`` pytest imports
the test modules as ``tests.<folder>.<module>``, so this module is importable as
``tests.helpers`` without touching ``sys.path``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from niwt_pipeline.core.backbones import BackboneSpec, SmallCNN
from niwt_pipeline.core.trained import TrainedBackbone

#: The metric keys of one method in ``gzsl_metrics.json``, in their contract order
#: (written out here, not imported, so a change to the library's list fails the tests).
METRIC_KEYS = (
    "S",
    "U",
    "H",
    "zsl_top1",
    "ausuc",
    "S_calibrated",
    "U_calibrated",
    "H_calibrated",
    "gamma",
)

#: The data layers of Kedro's data engineering convention, in the order data flows (the
#: folders data/01_raw .. data/08_reporting).
LAYERS = (
    "raw",
    "intermediate",
    "primary",
    "feature",
    "model_input",
    "models",
    "model_output",
    "reporting",
)

#: The classes of the hand-set backbone's outputs, in output order (deliberately unsorted).
SEEN_IDS = [3, 1, 4]
#: Its penultimate width D (SmallCNN's default).
DIM = 128

#: The classifier rows: row j is ``(j + 1) * [0, 1, ..., D - 1] / D`` (exact in float32).
CLASSIFIER_WEIGHT = torch.stack(
    [(j + 1) * torch.arange(DIM, dtype=torch.float32) / DIM for j in range(len(SEEN_IDS))]
)
CLASSIFIER_BIAS = torch.tensor([0.5, -0.25, 1.0])


def hand_set_spec(image_size: int = 16) -> BackboneSpec:
    """A ``small_cnn`` cut at ``block3``, inputs of ``image_size`` px, mean = std = 0.5."""
    return BackboneSpec(
        arch="small_cnn",
        layer="block3",
        image_size=image_size,
        mean=[0.5, 0.5, 0.5],
        std=[0.5, 0.5, 0.5],
        seen_class_ids=list(SEEN_IDS),
    )


def hand_set_state() -> dict[str, torch.Tensor]:
    """The state dict of a ``small_cnn`` with 3 outputs: convolutions and ``fc1`` from a fixed
    seed (the global RNG is left untouched), every BatchNorm with running mean 0.125 and
    running variance 2, and the classifier set to :data:`CLASSIFIER_WEIGHT` and
    :data:`CLASSIFIER_BIAS`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SmallCNN(len(SEEN_IDS))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for key, value in state.items():
        if key.endswith("running_mean"):
            value.fill_(0.125)
        elif key.endswith("running_var"):
            value.fill_(2.0)
    state["fc.weight"] = CLASSIFIER_WEIGHT.clone()
    state["fc.bias"] = CLASSIFIER_BIAS.clone()
    return state


def hand_set_backbone(image_size: int = 16) -> TrainedBackbone:
    """A :class:`TrainedBackbone` from :func:`hand_set_spec` and :func:`hand_set_state`."""
    return TrainedBackbone(hand_set_spec(image_size), hand_set_state())


def run_in_test_env(
    project: Path, pipelines: str | Sequence[str] | None = None, params: dict | None = None
) -> None:
    """``kedro run --env=test [--pipelines=...] [--params=...]`` in ``project``, in process."""
    from kedro.framework.project import configure_project
    from kedro.framework.session import KedroSession

    names = [pipelines] if isinstance(pipelines, str) else pipelines
    configure_project("niwt_pipeline")
    with KedroSession.create(
        project_path=project, env="test", runtime_params=params or {}
    ) as session:
        session.run(pipeline_names=list(names) if names else None)
