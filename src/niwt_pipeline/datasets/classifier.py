"""The packaged zero-shot classifier as one catalog entry: a folder with its weights and
its JSON spec (see :mod:`niwt_pipeline.core.classifier`)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from niwt_pipeline.core.classifier import SPEC_FILE, ZeroShotClassifier


class ZeroShotClassifierDataset(AbstractDataset[ZeroShotClassifier, ZeroShotClassifier]):
    """A :class:`~niwt_pipeline.core.classifier.ZeroShotClassifier` in a folder:
    ``weights.safetensors`` and ``classifier.json``, written atomically (a temporary
    sibling folder swapped into place). Nothing is unpickled on load.

    Example catalog entry::

        zero_shot_classifier:
          type: niwt_pipeline.datasets.ZeroShotClassifierDataset
          path: data/06_models/zero_shot_classifier
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        # ``_filepath`` is the folder: kedro-mlflow logs it as the artifact of a packaged
        # inference pipeline and points it at the logged copy when the model is loaded.
        self._filepath = PurePosixPath(path)
        self.metadata = metadata

    def load(self) -> ZeroShotClassifier:
        """The classifier in the folder.

        Raises:
            InputError: when the folder, a file or a tensor is missing, or the folder was
                written by an incompatible version (see :meth:`ZeroShotClassifier.load`).
        """
        return ZeroShotClassifier.load(Path(self._filepath))

    def save(self, data: ZeroShotClassifier) -> None:
        """Write the classifier (atomically; see :meth:`ZeroShotClassifier.save`).

        Raises:
            DatasetError: if ``data`` is not a :class:`ZeroShotClassifier`.
        """
        if not isinstance(data, ZeroShotClassifier):
            raise DatasetError(f"{self._filepath}: expected a ZeroShotClassifier, got {type(data)}")
        data.save(Path(self._filepath))

    def _exists(self) -> bool:
        return (Path(self._filepath) / SPEC_FILE).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath)}
