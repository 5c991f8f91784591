"""Export node: gather what :func:`niwt_pipeline.core.data.export.export_xlsa17` writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from niwt_pipeline.core.data.export import xlsa17_arrays
from niwt_pipeline.core.trained import TrainedBackbone


def build_xlsa17_export(
    image_outputs: dict[str, torch.Tensor],
    images: pd.DataFrame,
    classes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    backbone: TrainedBackbone,
    backbone_roles: pd.DataFrame,
    validation_roles: pd.DataFrame,
) -> dict[str, np.ndarray]:
    """The arrays of an xlsa17 export of the features NIWT used, with the validation's
    train/val split and the backbone's training images (see
    :func:`niwt_pipeline.core.data.export.xlsa17_arrays`)."""
    return xlsa17_arrays(
        image_outputs,
        images,
        classes,
        domain_knowledge,
        backbone.seen_rows(),
        backbone_roles=backbone_roles,
        validation_roles=validation_roles,
    )
