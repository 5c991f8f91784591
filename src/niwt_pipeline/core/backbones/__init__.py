"""Backbone networks: the architectures (:mod:`.zoo`), their weights (:mod:`.weights`), the
cut at the importance layer (:mod:`.cut`) and what rebuilds a trained one (:mod:`.spec`)."""

from niwt_pipeline.core.backbones.cut import (
    CutModel,
    check_importance_layer,
    cut_at_layer,
    preserved_modes,
)
from niwt_pipeline.core.backbones.spec import BackboneSpec
from niwt_pipeline.core.backbones.weights import (
    classifier_name,
    get_classifier,
    load_weights,
    read_state_dict,
    save_weights,
)
from niwt_pipeline.core.backbones.zoo import (
    ARCHS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SmallCNN,
    build_backbone,
    default_layer,
    preprocessing,
)

__all__ = [
    "ARCHS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BackboneSpec",
    "CutModel",
    "SmallCNN",
    "build_backbone",
    "check_importance_layer",
    "classifier_name",
    "cut_at_layer",
    "default_layer",
    "get_classifier",
    "load_weights",
    "preprocessing",
    "preserved_modes",
    "read_state_dict",
    "save_weights",
]
