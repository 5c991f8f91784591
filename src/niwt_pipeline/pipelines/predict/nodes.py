"""Predict nodes: which images, their predictions, and the gallery page (thin calls into
``niwt_pipeline.core``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd
from PIL import Image

from niwt_pipeline.core.classifier import ZeroShotClassifier
from niwt_pipeline.core.data.images import load_rgb
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.imageset import images_to_classify
from niwt_pipeline.core.report import predictions_gallery
from niwt_pipeline.params import PredictParams

logger = logging.getLogger(__name__)

TEST_SPLITS = ("test_seen", "test_unseen")


def classify_images(
    zero_shot_classifier: ZeroShotClassifier, images: pd.DataFrame, options: PredictParams
) -> pd.DataFrame:
    """Classify the images of ``predict.images`` (a folder or a CSV of paths; by default the
    dataset's test images) among every class, in batches; unreadable files get a row with
    their error.

    Returns:
        The predictions table of :meth:`ZeroShotClassifier.predict`.
    """
    if options.images is None:
        paths = images.loc[images["split"].isin(TEST_SPLITS), "path"].astype("str").tolist()
        if not paths:
            raise InputError("predict: the dataset has no test images; set predict.images")
    else:
        paths = images_to_classify(options.images)
    predictions = zero_shot_classifier.predict(
        paths,
        top_k=min(options.top_k, len(zero_shot_classifier.class_names)),
        explain=options.explain,
        explanation_dims=options.explanation_dims,
        batch_size=options.batch_size,
        device=options.device,
        progress=True,
    )
    failed = predictions["error"] != ""
    if failed.all():
        raise InputError(
            f"predict: none of the {len(predictions)} image(s) could be read (first: "
            f"{predictions['error'].iloc[0]}); the previous predictions are kept"
        )
    logger.info("predict: %d image(s) classified", int((~failed).sum()))
    if failed.any():
        logger.warning(
            "predict: %d image(s) not readable, each with its error row (first: %s)",
            int(failed.sum()),
            predictions.loc[failed, "error"].iloc[0],
        )
    return predictions


def render_predictions(
    predictions: pd.DataFrame, zero_shot_classifier: ZeroShotClassifier, options: PredictParams
) -> tuple[pd.DataFrame, str, dict[str, Callable[[], Image.Image]]]:
    """The predictions as CSV rows; ``predictions.html``: a thumbnail card per image (the
    first ``predict.gallery_max``) with its top classes and explanation; and, with
    ``predict.gradcam``, a Grad-CAM overlay of the top class per classified image (computed
    one by one as Kedro saves each partition)."""
    shown = predictions.head(options.gallery_max)
    thumbnails: dict[str, Image.Image] = {}
    for name, error in zip(shown["image"], shown["error"], strict=True):
        if not error:
            image = load_rgb(name)
            image.thumbnail((160, 160))
            thumbnails[name] = image
    spec = zero_shot_classifier.backbone.spec
    title = (
        f"Zero-shot predictions: {zero_shot_classifier.method}, {spec.arch} "
        f"({int(zero_shot_classifier.seen.sum())} seen, "
        f"{int((~zero_shot_classifier.seen).sum())} unseen classes)"
    )
    top_k = sum(1 for c in predictions.columns if c.startswith("class_") and "_id_" not in c)
    page = predictions_gallery(
        predictions, thumbnails, title=title, top_k=top_k, shown=options.gallery_max
    )
    maps: dict[str, Callable[[], Image.Image]] = {}
    if options.gradcam:
        for i, (name, error, class_id) in enumerate(
            zip(predictions["image"], predictions["error"], predictions["class_id_1"], strict=True)
        ):
            if not error:
                maps[f"{i:06d}_{Path(name).stem}"] = partial(
                    zero_shot_classifier.gradcam_overlay,
                    name,
                    int(class_id),
                    alpha=options.gradcam_alpha,
                )
    return predictions, page, maps
