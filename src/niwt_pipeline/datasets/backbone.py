"""A trained backbone as one catalog entry: a folder with its weights and its spec."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from niwt_pipeline.core.backbones.spec import BackboneSpec
from niwt_pipeline.core.data.atomic import replaced_folder
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.datasets.tensors import read_safetensors, write_safetensors

WEIGHTS_FILE = "weights.safetensors"
SPEC_FILE = "spec.json"


class TrainedBackboneDataset(AbstractDataset[TrainedBackbone, TrainedBackbone]):
    """A :class:`~niwt_pipeline.core.trained.TrainedBackbone` in a folder:
    ``weights.safetensors`` (the state dict) and ``spec.json`` (architecture, importance
    layer, preprocessing, seen classes).

    ``load`` returns the object (the model is built once, on first use, however many
    computations use it); ``save`` writes a temporary sibling folder and swaps it into
    place, so a crash never leaves a half-written backbone.

    Example catalog entry::

        backbone:
          type: niwt_pipeline.datasets.TrainedBackboneDataset
          path: data/04_feature/backbone
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = PurePosixPath(path)
        self.metadata = metadata

    def load(self) -> TrainedBackbone:
        """The :class:`TrainedBackbone` stored in the folder (the model is built on first use).

        Raises:
            DatasetError: if the folder has no ``spec.json``, the spec is not valid, or
                ``weights.safetensors`` is missing.
        """
        root = Path(self._path)
        spec_file = root / SPEC_FILE
        if not spec_file.is_file():
            raise DatasetError(f"{root}: no trained backbone (run the pipeline that trains it)")
        try:
            spec = BackboneSpec.from_dict(json.loads(spec_file.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise DatasetError(f"{spec_file}: not a backbone spec ({exc})") from None
        state, _ = read_safetensors(root / WEIGHTS_FILE)
        return TrainedBackbone(spec, state)

    def save(self, data: TrainedBackbone) -> None:
        """Write the weights and spec to a temporary sibling folder and swap it into place.

        Raises:
            DatasetError: if ``data`` is not a :class:`TrainedBackbone` (Kedro wraps any
                other failure, e.g. an ``OSError`` while writing, in a ``DatasetError``).
        """
        if not isinstance(data, TrainedBackbone):
            raise DatasetError(f"{self._path}: expected a TrainedBackbone, got {type(data)}")
        with replaced_folder(Path(self._path)) as staging:
            write_safetensors(staging / WEIGHTS_FILE, data.state)
            (staging / SPEC_FILE).write_text(
                json.dumps(data.spec.to_dict(), indent=2) + "\n", encoding="utf-8"
            )

    def _exists(self) -> bool:
        return (Path(self._path) / SPEC_FILE).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
