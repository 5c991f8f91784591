"""NIWT's explanations (Selvaraju et al., ECCV 2018, sec. 3.4): neuron names
(:mod:`.neurons`), textual explanations (:mod:`.textual`) and their scores
(:mod:`.scoring`), and Grad-CAM maps of any classifier row (:mod:`.visual`)."""

from niwt_pipeline.core.explain.common import dimension_names, table_dimension_names
from niwt_pipeline.core.explain.neurons import (
    NAME_COLUMNS,
    NameAgreement,
    NeuronNames,
    name_neurons,
    neuron_name_agreement,
    neuron_names_from_covariation,
    neuron_names_from_mapper,
)
from niwt_pipeline.core.explain.scoring import (
    ExplanationScores,
    json_ready,
    precision_at_k,
    precision_by_group,
    random_precision_at_k,
    score_explanations,
    truth_for_explanations,
)
from niwt_pipeline.core.explain.textual import (
    Explanation,
    class_test_images,
    explain_predictions,
    explanations_frame,
    predicted_row_importance,
    require_image_files,
    row_importance_on_images,
    textual_explanations,
)
from niwt_pipeline.core.explain.visual import (
    choose_example_classes,
    example_maps,
    visual_explanations,
)

__all__ = [
    "NAME_COLUMNS",
    "Explanation",
    "ExplanationScores",
    "NameAgreement",
    "NeuronNames",
    "choose_example_classes",
    "class_test_images",
    "dimension_names",
    "example_maps",
    "explain_predictions",
    "explanations_frame",
    "json_ready",
    "name_neurons",
    "neuron_name_agreement",
    "neuron_names_from_covariation",
    "neuron_names_from_mapper",
    "precision_at_k",
    "precision_by_group",
    "predicted_row_importance",
    "random_precision_at_k",
    "require_image_files",
    "row_importance_on_images",
    "score_explanations",
    "table_dimension_names",
    "textual_explanations",
    "truth_for_explanations",
    "visual_explanations",
]
