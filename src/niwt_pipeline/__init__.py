"""niwt-pipeline: Neuron Importance-Aware Weight Transfer as a Kedro project.

``niwt_pipeline.load_classifier(folder).predict(images)`` classifies images with a packaged
zero-shot classifier without Kedro (see :mod:`niwt_pipeline.core.classifier`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from niwt_pipeline.core.classifier import ZeroShotClassifier

__all__ = ["__version__", "load_classifier"]


def load_classifier(folder: Any) -> ZeroShotClassifier:
    """The packaged zero-shot classifier in ``folder`` (``data/06_models/zero_shot_classifier``
    after a run); ``.predict(images)`` returns a DataFrame. Imports neither Kedro nor MLflow.

    Raises:
        InputError: when the folder or one of its files is missing, or it was written by an
            incompatible version (the message names the file and the fix).
    """
    from niwt_pipeline.core.classifier import load_classifier as _load

    return _load(folder)
