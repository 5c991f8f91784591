"""Serve node: answer one prediction request with the packaged classifier."""

from __future__ import annotations

import pandas as pd

from niwt_pipeline.core.classifier import ZeroShotClassifier, request_images

#: Classes per image in a served answer.
TOP_K = 3


def answer_prediction_request(
    zero_shot_classifier: ZeroShotClassifier, prediction_request: pd.DataFrame
) -> pd.DataFrame:
    """Classify the images of a request (``path`` or base64 ``image`` column) among every
    class; a row that cannot be read gets its error and the others are still classified.

    Returns:
        The table of :meth:`ZeroShotClassifier.predict` (top 3 classes, with explanations),
        as Python objects with None where a value is missing (strict JSON when served).
    """
    answer = zero_shot_classifier.predict(
        request_images(prediction_request),
        top_k=min(TOP_K, len(zero_shot_classifier.class_names)),
        explain=zero_shot_classifier.inverse is not None,
        device="cpu",
    )
    # strict JSON for the HTTP answer: a row with an error has null scores, not NaN
    return answer.astype(object).where(answer.notna(), None)
