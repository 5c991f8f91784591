"""Named tensors (weights, features, importances) stored as safetensors files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError
from safetensors.torch import load_file, save_file


class SafetensorsDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A ``dict[str, torch.Tensor]`` saved as one ``.safetensors`` file, written atomically.

    String metadata can travel with the tensors under the reserved key ``"__metadata__"``
    (a JSON-serialisable dict); it comes back under the same key on load.  Nothing is
    unpickled: loading user files cannot execute code.

    Example catalog entry::

        backbone_weights:
          type: niwt_pipeline.datasets.SafetensorsDataset
          filepath: data/06_models/backbone.safetensors
    """

    METADATA_KEY = "__metadata__"

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        path = Path(self._filepath)
        if not path.is_file():
            raise DatasetError(f"{path}: file not found (run the pipeline that produces it first)")
        tensors: dict[str, Any] = dict(load_file(str(path)))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("json")
        if raw:
            tensors[self.METADATA_KEY] = json.loads(raw)
        return tensors

    def save(self, data: dict[str, Any]) -> None:
        data = dict(data)
        extra = data.pop(self.METADATA_KEY, None)
        bad = [k for k, v in data.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise DatasetError(f"{self._filepath}: values of {bad} are not tensors")
        tensors = {k: v.detach().cpu().contiguous() for k, v in data.items()}
        path = Path(self._filepath)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"json": json.dumps(extra)} if extra else None)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
