"""Neuron-importance-aware weight transfer (NIWT; Selvaraju et al., "Choose Your Neuron:
Incorporating Domain Knowledge through Neuron-Importance", ECCV 2018, sec. 3.3): new
classifier rows for the unseen classes.

For a layer ``L`` with activations ``A`` (K channels) and penultimate features
``z = head(A)`` (D,), the importance of a classifier row ``w`` (D,) on an image ``x``
is the gradient of its logit ``w . z + b`` w.r.t. ``A``, summed over the positions:

    alpha_w(x) = G(x) w,    G(x) = sum over positions of dz/dA   (K, D)

so it is **linear** in ``w`` and independent of ``b``.  NIWT finds rows ``w_u`` whose
importance on a set of reference images matches the mapper's prediction ``a_u`` (eq. 3)::

    loss = mean_u [ mean_x (1 - cos(G(x) w_u, a_u)) + lam * ||w_u - anchor_u||^2 ]

with Adam, stopping when the loss has not improved by ``min_rel_improvement`` for
``patience`` steps and keeping the rows with the lowest training loss (as the authors'
code, ramprs/neuron-importance-zsl, does).  Three equivalent ways of evaluating the loss:

``gram``   precompute ``G`` (N, K, D) once (:func:`reference_gram`); a step is one einsum.
``head``   cache ``A`` of the reference images and run only the head each step,
           getting every ``G(x) w_u`` as a VJP of ``z`` with cotangent ``w_u``.
``naive``  :func:`transfer_rows_naive`: run the whole network with the new rows appended
           and differentiate their logits w.r.t. ``A`` (the slow loop, for tests).

Modules: :mod:`.config` (settings, results), :mod:`.gram` (G and its moments),
:mod:`.solvers` (the gradient and least-squares solvers), :mod:`.naive`,
:mod:`.reference` (the reference images and their cache), :mod:`.matching` (new rows
put on the seen rows' logit scale), :mod:`.variants` (NIWT variants and the rows of one
variant).
"""

from niwt_pipeline.core.transfer.config import (
    PAPER_SETTINGS,
    TransferConfig,
    TransferResult,
    paper_config,
)
from niwt_pipeline.core.transfer.gram import (
    GramMoments,
    eval_mode,
    gram_moments,
    reference_gram,
    row_importance,
)
from niwt_pipeline.core.transfer.matching import (
    LOGIT_MATCHING,
    match_seen_logits,
    seen_negative_logits,
)
from niwt_pipeline.core.transfer.naive import transfer_rows_naive
from niwt_pipeline.core.transfer.reference import (
    ReferenceCache,
    ReferenceConfig,
    layer_activations,
    reference_cache,
    reference_images,
)
from niwt_pipeline.core.transfer.solvers import transfer_rows
from niwt_pipeline.core.transfer.variants import (
    NIWTVariant,
    effective_overrides,
    make_variant,
    matched_rows,
    variant_rows,
)

__all__ = [
    "LOGIT_MATCHING",
    "PAPER_SETTINGS",
    "paper_config",
    "GramMoments",
    "NIWTVariant",
    "ReferenceCache",
    "ReferenceConfig",
    "TransferConfig",
    "TransferResult",
    "effective_overrides",
    "eval_mode",
    "gram_moments",
    "layer_activations",
    "make_variant",
    "match_seen_logits",
    "matched_rows",
    "reference_cache",
    "reference_gram",
    "reference_images",
    "row_importance",
    "seen_negative_logits",
    "transfer_rows",
    "transfer_rows_naive",
    "variant_rows",
]
