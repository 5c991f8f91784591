"""Named tensors (weights, features, importances) and value objects stored as safetensors
files, written atomically."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError
from kedro.utils import load_obj
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from niwt_pipeline.core.data.atomic import replaced_atomically


def write_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None
) -> None:
    """Write ``tensors`` (and JSON ``metadata``) to ``path`` atomically: a temporary file
    beside it is renamed into place, so a crash never leaves a half-written file.

    Raises:
        DatasetError: when a value is not a tensor.
    """
    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise DatasetError(f"{path}: values of {bad} are not tensors")
    tensors = _unshared({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    with replaced_atomically(path) as tmp:
        save_file(tensors, str(tmp), metadata={"json": json.dumps(metadata)} if metadata else None)


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of the tensors whose memory another one already uses (safetensors refuses
    shared memory, e.g. two row sets holding the same class-id array)."""
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        pointer = value.untyped_storage().data_ptr() if value.numel() else -1
        out[key] = value.clone() if pointer in seen else value
        if pointer != -1:
            seen.add(pointer)
    return out


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a safetensors file and its JSON metadata (``{}`` when there is none).

    Raises:
        DatasetError: when the file does not exist.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (run the pipeline that produces it first)")
    tensors: dict[str, torch.Tensor] = dict(load_file(str(path)))
    with safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get("json")
    return tensors, (json.loads(raw) if raw else {})


class SafetensorsDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A ``dict[str, torch.Tensor]`` saved as one ``.safetensors`` file, written atomically.

    String metadata can travel with the tensors under the reserved key ``"__metadata__"``
    (a JSON-serialisable dict); it comes back under the same key on load.  Nothing is
    unpickled: loading user files cannot execute code.

    Example catalog entry::

        image_outputs:
          type: niwt_pipeline.datasets.SafetensorsDataset
          filepath: data/04_feature/image_outputs.safetensors
    """

    METADATA_KEY = "__metadata__"

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        """``{name: tensor}`` from the file, plus ``"__metadata__"`` when it has metadata.

        Raises:
            DatasetError: if the file does not exist.
        """
        tensors, extra = read_safetensors(Path(self._filepath))
        out: dict[str, Any] = dict(tensors)
        if extra:
            out[self.METADATA_KEY] = extra
        return out

    def save(self, data: dict[str, Any]) -> None:
        """Write the tensors of ``data`` (and its ``"__metadata__"`` dict) atomically.

        Raises:
            DatasetError: if a value other than ``"__metadata__"`` is not a tensor.
        """
        data = dict(data)
        extra = data.pop(self.METADATA_KEY, None)
        write_safetensors(Path(self._filepath), data, extra)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class SafetensorsObjectDataset(AbstractDataset[Any, Any]):
    """A library value object saved as one ``.safetensors`` file (tensors + JSON metadata).

    ``object_type`` names the class (a dotted path); it provides
    ``to_safetensors() -> (tensors, metadata)`` and the classmethod
    ``from_safetensors(tensors, metadata)``.  Loading returns a ready object, so no node
    rebuilds it from a dict.  Written atomically; nothing is unpickled.

    Example catalog entry::

        gzsl_evaluation:
          type: niwt_pipeline.datasets.SafetensorsObjectDataset
          filepath: data/07_model_output/gzsl_evaluation.safetensors
          object_type: niwt_pipeline.core.gzsl.GZSLEvaluation
    """

    def __init__(
        self, *, filepath: str, object_type: str, metadata: dict[str, Any] | None = None
    ) -> None:
        self._filepath = PurePosixPath(filepath)
        self._object_type = object_type
        self._type = load_obj(object_type)
        for method in ("to_safetensors", "from_safetensors"):
            if not hasattr(self._type, method):
                raise DatasetError(f"{object_type} has no {method}(); it cannot be stored here")
        self.metadata = metadata

    def load(self) -> Any:
        """The object rebuilt by ``object_type.from_safetensors(tensors, metadata)``.

        Raises:
            DatasetError: if the file does not exist (Kedro wraps the errors of
                ``from_safetensors``, e.g. ``KeyError``, likewise).
        """
        tensors, extra = read_safetensors(Path(self._filepath))
        return self._type.from_safetensors(tensors, extra)

    def save(self, data: Any) -> None:
        """Write ``data.to_safetensors()`` atomically.

        Raises:
            DatasetError: if ``data`` is not an instance of ``object_type`` or a value of
                its tensors is not a tensor.
        """
        if not isinstance(data, self._type):
            raise DatasetError(
                f"{self._filepath}: expected a {self._object_type}, got {type(data).__name__}"
            )
        tensors, extra = data.to_safetensors()
        write_safetensors(Path(self._filepath), tensors, extra)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "object_type": self._object_type}
