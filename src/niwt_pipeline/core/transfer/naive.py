"""The naive weight-transfer loop: the whole network runs at every step (for tests and timing).

It minimises the NIWT transfer loss (Selvaraju et al., "Choose Your Neuron", ECCV 2018,
sec. 3.3, eq. 3) the slow way, as a check on the fast solvers of :mod:`.solvers`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from niwt_pipeline.core.transfer.config import TransferConfig, TransferResult
from niwt_pipeline.core.transfer.gram import _spatial_sum, eval_mode
from niwt_pipeline.core.transfer.solvers import _optimise, _prepare


def transfer_rows_naive(
    target_importance: np.ndarray | torch.Tensor,
    stem: nn.Module,
    head: nn.Module,
    classifier: nn.Linear,
    images: torch.Tensor,
    *,
    config: TransferConfig | None = None,
    init_weight: torch.Tensor | None = None,
    anchor: torch.Tensor | None = None,
    unseen_bias: torch.Tensor | None = None,
) -> TransferResult:
    """The naive loop: every step runs the whole network on the reference images.

    The network is ``classifier`` with the new rows appended, on top of ``head(stem(x))``;
    the importance of each new row is ``autograd.grad`` of its logit w.r.t. the layer
    activations ``A = stem(x)``, summed over positions.  Same init, batches, loss, optimiser
    and stopping rule as :func:`transfer_rows`, so it must give the same rows; only for
    tests and timing.  ``config.method`` is ignored.

    Args:
        target_importance: (U, K); stem: x -> A (B, K, ...); head: A -> z (B, D);
        classifier: the seen ``nn.Linear(D, S)``; images: (N, C, H, W) reference images.

    Returns:
        :class:`TransferResult` with the (U, D) rows and their biases.

    Raises:
        ValueError: if ``target_importance`` is not a finite (U, K) array, or
            ``init_weight``, ``anchor`` or ``unseen_bias`` has the wrong shape.
    """
    config = config or TransferConfig()
    problem = _prepare(
        target_importance,
        classifier.weight,
        classifier.bias,
        config,
        init_weight=init_weight,
        anchor=anchor,
        unseen_bias=unseen_bias,
    )
    dtype = problem.init.dtype
    n_seen = classifier.out_features
    new_bias = problem.bias

    def alpha(weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x = images[idx.to(images.device)].to(dtype=dtype, device=problem.init.device)
        acts = stem(x)
        if not acts.requires_grad:
            acts = acts.detach().requires_grad_(True)
        z = head(acts)
        logits = torch.cat([classifier(z), F.linear(z, weight, new_bias)], dim=1)
        rows = []
        for u in range(weight.shape[0]):
            (g,) = torch.autograd.grad(logits[:, n_seen + u].sum(), acts, create_graph=True)
            rows.append(_spatial_sum(g, 2))
        return torch.stack(rows, dim=1)  # (B, U, K)

    with eval_mode(stem, head, classifier):
        return _optimise(
            problem,
            alpha,
            n_images=images.shape[0],
            config=config,
            method="naive",
            setup_s=0.0,
            chunk_size=config.chunk_size,
        )
