"""Hyper-parameters and results of NIWT weight transfer (Selvaraju et al., ECCV 2018, sec. 3.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

INITS = ("seen_centred", "mean_seen", "zeros")
BIASES = ("mean_seen", "zeros")
METHODS = ("gram", "head", "auto")
OPTIMIZERS = ("adam", "sgd")
SOLVERS = ("gradient", "least_squares")
REG_REDUCTIONS = ("mean", "half_sum")

#: The paper's weight-transfer settings per dataset (Selvaraju et al., ECCV 2018, sec. 4,
#: and the authors' configurations ``arg_configs/resnet_config_{CUB,AWA2}.json`` of
#: github.com/ramprs/neuron-importance-zsl: ``learning_rate``, ``reg_lambda``).
PAPER_SETTINGS: dict[str, dict[str, float]] = {
    "cub": {"lr": 1e-4, "lam": 1e-2},
    "awa2": {"lr": 1e-3, "lam": 1e-3},
}


@dataclass
class TransferConfig:
    """Hyper-parameters of :func:`transfer_rows`.

    Attributes:
        lr: learning rate (:func:`paper_config` has the paper's per dataset).
        lam: weight of ``||w_u - anchor_u||^2`` (:func:`paper_config` has the paper's).
        max_steps: upper bound on optimisation steps.
        patience: stop when the loss has not improved by ``min_rel_improvement`` (relative)
            for this many steps.
        min_rel_improvement: relative improvement that resets the patience counter.
        init: ``"seen_centred"`` (Gaussian with the per-dimension mean and std of the seen
            rows), ``"mean_seen"`` (every row = the mean seen row) or ``"zeros"``.
        bias: bias of the new rows (not optimised: importance does not depend on it):
            ``"mean_seen"``, ``"zeros"`` or a number.
        batch_size: reference images per step; ``None`` = all of them every step.  Smaller
            batches cycle through seeded permutations.
        seed: seeds the initialisation and the batch order.
        method: ``"gram"``, ``"head"`` or ``"auto"`` (gram when G is given or fits in the
            memory budget :func:`transfer_rows` is given).
        optimizer: ``"adam"`` (the paper's) or ``"sgd"`` (plain gradient descent).
        chunk_size: images per forward/backward chunk in the ``head`` and naive paths
            (memory bound; gradients are accumulated, so the result does not depend on it);
            ``None`` = the whole batch at once.
        gram_mode: how :func:`reference_gram` computes G when ``transfer_rows`` does:
            ``"auto"``, ``"vjp"`` or ``"jvp"``.
        vmap_chunk_size: products per vmapped call when computing G and in the ``head``
            path with ``head_vmap`` (memory bound); ``None`` = all at once.
        head_vmap: in the ``head`` path, vectorise the U VJPs with ``vmap``; off by default
            because a plain loop over the rows measured as fast or faster on CPU.
        rescale_rows: after optimisation, rescale each new row to the mean L2 norm of the
            seen rows (the cosine loss leaves the norm free).
        progress: show a tqdm bar over the steps.
        solver: ``"gradient"`` (the paper's: minimise the cosine loss with ``optimizer``)
            or ``"least_squares"``: the closed-form row minimising
            ``sum_x ||G(x) w - s a||^2 + ls_alpha * tr(M)/D * ||w - anchor||^2`` with
            ``M = sum_x G(x)^T G(x)`` and ``s`` the seen rows' mean importance norm, i.e. the
            importance matched per reference image in L2 instead of by mean cosine; one
            D x D solve for all rows, no steps (``lr``, ``lam``, ``init`` and the stopping
            rule do not apply).
        ls_alpha: ridge strength of the ``least_squares`` solver, relative to ``tr(M)/D``.
        reg_reduction: how the ``lam`` term adds up over the new rows: ``"mean"``
            (``lam * mean_u ||w_u - anchor_u||^2``) or ``"half_sum"``
            (``lam * 0.5 * sum_u ||w_u - anchor_u||^2``, the authors' ``tf.nn.l2_loss``).
    """

    lr: float = 1e-3
    lam: float = 1e-3
    max_steps: int = 2000
    patience: int = 40
    min_rel_improvement: float = 0.01
    init: str = "seen_centred"
    bias: str | float = "mean_seen"
    batch_size: int | None = None
    seed: int = 0
    method: str = "auto"
    optimizer: str = "adam"
    chunk_size: int | None = None
    gram_mode: str = "auto"
    vmap_chunk_size: int | None = 16
    head_vmap: bool = False
    rescale_rows: bool = False
    progress: bool = True
    solver: str = "gradient"
    ls_alpha: float = 1e-3
    reg_reduction: str = "mean"

    def __post_init__(self) -> None:
        if self.reg_reduction not in REG_REDUCTIONS:
            raise ValueError(
                f"TransferConfig.reg_reduction: expected one of {REG_REDUCTIONS}, "
                f"got {self.reg_reduction!r}"
            )
        if self.solver not in SOLVERS:
            raise ValueError(
                f"TransferConfig.solver: expected one of {SOLVERS}, got {self.solver!r}"
            )
        if self.ls_alpha < 0:
            raise ValueError(f"TransferConfig.ls_alpha: expected >= 0, got {self.ls_alpha}")
        if self.lr <= 0:
            raise ValueError(f"TransferConfig.lr: expected > 0, got {self.lr}")
        if self.lam < 0:
            raise ValueError(f"TransferConfig.lam: expected >= 0, got {self.lam}")
        if self.max_steps < 1:
            raise ValueError(f"TransferConfig.max_steps: expected >= 1, got {self.max_steps}")
        if self.patience < 1:
            raise ValueError(f"TransferConfig.patience: expected >= 1, got {self.patience}")
        if not 0 <= self.min_rel_improvement < 1:
            raise ValueError(
                "TransferConfig.min_rel_improvement: expected in [0, 1), "
                f"got {self.min_rel_improvement}"
            )
        if self.init not in INITS:
            raise ValueError(f"TransferConfig.init: expected one of {INITS}, got {self.init!r}")
        if isinstance(self.bias, str) and self.bias not in BIASES:
            raise ValueError(
                f"TransferConfig.bias: expected one of {BIASES} or a number, got {self.bias!r}"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(
                f"TransferConfig.batch_size: expected >= 1 or None, got {self.batch_size}"
            )
        if self.method not in METHODS:
            raise ValueError(
                f"TransferConfig.method: expected one of {METHODS}, got {self.method!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"TransferConfig.optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}"
            )
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(
                f"TransferConfig.chunk_size: expected >= 1 or None, got {self.chunk_size}"
            )
        if self.gram_mode not in ("auto", "vjp", "jvp"):
            raise ValueError(
                f"TransferConfig.gram_mode: expected 'auto', 'vjp' or 'jvp', got {self.gram_mode!r}"
            )
        if self.vmap_chunk_size is not None and self.vmap_chunk_size < 1:
            raise ValueError(
                f"TransferConfig.vmap_chunk_size: expected >= 1 or None, got {self.vmap_chunk_size}"
            )


def paper_config(dataset: str, *, seed: int = 0, progress: bool = True) -> TransferConfig:
    """NIWT's weight transfer exactly as published for ``dataset`` (``"cub"`` or ``"awa2"``).

    Selvaraju et al., ECCV 2018, sec. 3.3 and 4, with the values of the authors' code
    (github.com/ramprs/neuron-importance-zsl, ``alpha2w.py`` and
    ``arg_configs/resnet_config_{CUB,AWA2}.json``): Adam at ``lr`` 1e-4 (CUB) / 1e-3
    (AWA2); the regulariser ``lam * 0.5 * sum_u ||w_u - mean seen row||^2`` with ``lam``
    1e-2 / 1e-3 (``reg_lambda``, ``tf.nn.l2_loss``); seen-centred initialisation; batches
    of 32 reference images; stop when the loss has not improved by 1% in 40 steps; the
    rows with the lowest training loss; biases zero (the new layer's initial biases: the
    importance does not depend on them, so they never move); no rescaling of the rows.

    Two choices are this project's, not the paper's: ``max_steps`` caps the loop at 2000
    steps (the authors' cap is 500 epochs; the stopping rule ends it long before), and
    each step uses every new class on each of its 32 images (the authors pair each image
    with one unseen class).

    Args:
        dataset: ``"cub"`` or ``"awa2"`` (:data:`PAPER_SETTINGS`).
        seed: seeds the initialisation and the batch order.
        progress: show a progress bar.

    Raises:
        ValueError: on another ``dataset``.
    """
    if dataset not in PAPER_SETTINGS:
        raise ValueError(
            f"paper settings: expected one of {tuple(PAPER_SETTINGS)}, got {dataset!r}"
        )
    return TransferConfig(
        **PAPER_SETTINGS[dataset],
        max_steps=2000,
        patience=40,
        min_rel_improvement=0.01,
        init="seen_centred",
        bias="zeros",
        batch_size=32,
        seed=seed,
        optimizer="adam",
        rescale_rows=False,
        progress=progress,
        solver="gradient",
        reg_reduction="half_sum",
    )


@dataclass
class TransferResult:
    """The new rows and how the optimisation went.

    Attributes:
        weight: (U, D) rows with the lowest training loss (rescaled if configured).
        bias: (U,) their biases.
        history: training loss at each step (evaluated at the weights before the update).
        steps: number of steps evaluated (``len(history)``).
        stopped_reason: ``"plateau"``, ``"max_steps"`` or ``"non_finite"``.
        best_step: 0-based step whose weights were kept; ``best_loss`` its loss.
        method: ``"gram"``, ``"head"`` or ``"naive"``.
        timings: seconds: ``setup`` (G or activation caching), ``optimise``, ``per_step``.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    history: list[float]
    steps: int
    stopped_reason: str
    best_step: int
    best_loss: float
    method: str
    timings: dict[str, float] = field(default_factory=dict)
