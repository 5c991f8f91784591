"""Neuron-importance-aware weight transfer: new classifier rows for the unseen classes.

For a layer ``L`` with activations ``A`` (K channels) and penultimate features
``z = head(A)`` (D,), the importance of a classifier row ``w`` (D,) on an image ``x``
is the gradient of its logit ``w . z + b`` w.r.t. ``A``, summed over the positions:

    alpha_w(x) = G(x) w,    G(x) = sum over positions of dz/dA   (K, D)

so it is **linear** in ``w`` and independent of ``b``.  NIWT finds rows ``w_u`` whose
importance on a set of reference images matches the mapper's prediction ``a_u``::

    loss = mean_u [ mean_x (1 - cos(G(x) w_u, a_u)) + lam * ||w_u - anchor_u||^2 ]

with Adam, stopping when the loss has not improved by ``min_rel_improvement`` for
``patience`` steps and keeping the rows with the lowest training loss (as the reference
code does).  Three equivalent ways of evaluating the loss:

``gram``   precompute ``G`` (N, K, D) once (:func:`reference_gram`); a step is one einsum.
``head``   cache ``A`` of the reference images and run only the head each step,
           getting every ``G(x) w_u`` as a VJP of ``z`` with cotangent ``w_u``.
``naive``  :func:`transfer_rows_naive`: run the whole network with the new rows appended
           and differentiate their logits w.r.t. ``A`` (the slow reference loop, for tests).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp, vjp, vmap
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

_EPS = 1e-12
INITS = ("seen_centred", "mean_seen", "zeros")
BIASES = ("mean_seen", "zeros")
METHODS = ("gram", "head", "auto")
OPTIMIZERS = ("adam", "sgd")
SOLVERS = ("gradient", "least_squares")


@dataclass
class TransferConfig:
    """Hyper-parameters of :func:`transfer_rows`.

    Attributes:
        lr: learning rate (reference: 1e-4 CUB, 1e-3 AWA2).
        lam: weight of ``||w_u - anchor_u||^2`` (reference: 1e-2 CUB, 1e-3 AWA2).
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
        method: ``"gram"``, ``"head"`` or ``"auto"`` (gram when G fits in
            ``gram_memory_budget_bytes``).
        optimizer: ``"adam"`` (the reference) or ``"sgd"`` (plain gradient descent).
        gram_memory_budget_bytes: the ``auto`` threshold on ``N * K * D * itemsize``.
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
        solver: ``"gradient"`` (the reference: minimise the cosine loss with ``optimizer``)
            or ``"least_squares"``: the closed-form row minimising
            ``sum_x ||G(x) w - s a||^2 + ls_alpha * tr(M)/D * ||w - anchor||^2`` with
            ``M = sum_x G(x)^T G(x)`` and ``s`` the seen rows' mean importance norm, i.e. the
            importance matched per reference image in L2 instead of by mean cosine; one
            D x D solve for all rows, no steps (``lr``, ``lam``, ``init`` and the stopping
            rule do not apply).
        ls_alpha: ridge strength of the ``least_squares`` solver, relative to ``tr(M)/D``.
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
    gram_memory_budget_bytes: int = 2 * 1024**3
    chunk_size: int | None = None
    gram_mode: str = "auto"
    vmap_chunk_size: int | None = 16
    head_vmap: bool = False
    rescale_rows: bool = False
    progress: bool = True
    solver: str = "gradient"
    ls_alpha: float = 1e-3

    def __post_init__(self) -> None:
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


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put modules (and all their submodules) in eval mode, restoring each one's flag after."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def _functional(head: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``a -> head(a)`` with detached parameters: no graph through, and no grads into, them."""
    params = {k: v.detach() for k, v in head.named_parameters()}
    buffers = dict(head.named_buffers())

    def f(a: torch.Tensor) -> torch.Tensor:
        z = functional_call(head, (params, buffers), (a,))
        if z.ndim != 2:
            raise ValueError(f"head must return (B, D) features, got shape {tuple(z.shape)}")
        return z

    return f


def _spatial_sum(g: torch.Tensor, keep: int) -> torch.Tensor:
    """Sum every dimension after the first ``keep`` ones."""
    return g.sum(dim=tuple(range(keep, g.ndim))) if g.ndim > keep else g


def _iter_activations(
    activations: torch.Tensor | Iterable, batch_size: int
) -> Iterator[torch.Tensor]:
    if isinstance(activations, torch.Tensor):
        for start in range(0, activations.shape[0], batch_size):
            yield activations[start : start + batch_size]
        return
    for item in activations:
        yield item[0] if isinstance(item, (tuple, list)) else item


def reference_gram(
    head: nn.Module,
    activations: torch.Tensor | Iterable[torch.Tensor],
    batch_size: int = 32,
    *,
    mode: str = "auto",
    chunk_size: int | None = 16,
    progress: bool = False,
) -> torch.Tensor:
    """``G(x) = sum over positions of dz/dA`` for each reference image, exactly, by autograd.

    Two exact ways, chosen by ``mode``:

    ``"vjp"``  D reverse-mode products, one-hot cotangents ``e_d`` on ``z``: row ``d`` of G^T.
    ``"jvp"``  K forward-mode products, tangent = channel ``k`` set to 1 at every position
               (summing over positions is a direction in input space): row ``k`` of G.
    ``"auto"`` the one with fewer products (jvp when K < D), falling back to vjp when the
               head has an op without forward-mode support.

    Args:
        head: A (B, K, ...) -> z (B, D); run in eval mode (its flags are restored after),
            with detached parameters: no parameter gradients are accumulated.
        activations: (N, K, h, w) tensor (any trailing spatial dims, or none), or an
            iterable of such batches (or of tuples whose first item is the batch).
        batch_size: images per head call when ``activations`` is a tensor.
        mode: ``"auto"``, ``"vjp"`` or ``"jvp"``.
        chunk_size: products per vmapped call (bounds memory to about
            ``chunk_size * batch * K * h * w`` floats, and is often faster than all at once);
            ``None`` = all at once.
        progress: tqdm bar over batches.

    Returns:
        G: (N, K, D) with ``G[n] @ w`` = the importance of row ``w`` on image ``n``.
    """
    if mode not in ("auto", "vjp", "jvp"):
        raise ValueError(f"reference_gram: mode must be 'auto', 'vjp' or 'jvp', got {mode!r}")
    f = _functional(head)
    out: list[torch.Tensor] = []
    with eval_mode(head), torch.enable_grad():
        for batch in tqdm(
            _iter_activations(activations, batch_size), disable=not progress, desc="reference gram"
        ):
            a = batch.detach()
            use = mode
            if use == "auto":
                with torch.no_grad():
                    d = f(a[:1]).shape[1]
                use = "jvp" if a.shape[1] < d else "vjp"
            if use == "jvp":
                try:
                    out.append(_gram_jvp(f, a, chunk_size))
                    continue
                except (NotImplementedError, RuntimeError) as exc:
                    if mode == "jvp":
                        raise
                    logger.warning(
                        "reference_gram: forward mode failed (%s); using reverse mode", exc
                    )
                    mode = "vjp"
            out.append(_gram_vjp(f, a, chunk_size))
    if not out:
        raise ValueError("reference_gram: no activations")
    return torch.cat(out)


def _gram_vjp(
    f: Callable[[torch.Tensor], torch.Tensor], a: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    """(B, K, ...) -> (B, K, D) by D vmapped VJPs with one-hot cotangents."""
    z, vjp_fn = vjp(f, a)
    b, d = z.shape
    onehot = torch.eye(d, dtype=z.dtype, device=z.device).unsqueeze(1).expand(d, b, d)
    (g,) = vmap(vjp_fn, chunk_size=chunk_size)(onehot)  # (D, B, K, ...)
    return _spatial_sum(g, 3).permute(1, 2, 0).detach()


def _gram_jvp(
    f: Callable[[torch.Tensor], torch.Tensor], a: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    """(B, K, ...) -> (B, K, D) by K vmapped JVPs, tangent = one channel at every position."""
    k = a.shape[1]
    eye = torch.eye(k, dtype=a.dtype, device=a.device).reshape(k, 1, k, *([1] * (a.ndim - 2)))
    tangents = eye.expand(k, *a.shape)

    def column(t: torch.Tensor) -> torch.Tensor:
        return jvp(f, (a,), (t,))[1]

    g = vmap(column, chunk_size=chunk_size)(tangents)  # (K, B, D)
    return g.transpose(0, 1).detach()


def row_importance(gram: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Importance of classifier rows on the reference images: (N, K, D) x (U, D) -> (N, U, K)."""
    return torch.einsum("nkd,ud->nuk", gram, weight.to(gram.dtype))


def _mean_cos_distance_sum(alpha: torch.Tensor, target_unit: torch.Tensor) -> torch.Tensor:
    """Sum over (b, u) of ``1 - cos(alpha[b, u], target[u])``; alpha (B, U, K), target (U, K)."""
    num = torch.einsum("buk,uk->bu", alpha, target_unit)
    den = alpha.norm(dim=-1).clamp_min(_EPS)
    return (1.0 - num / den).sum()


def _as_tensor(
    x: np.ndarray | torch.Tensor,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))
    return t.to(dtype=dtype if dtype is not None else t.dtype, device=device)


@dataclass
class _Problem:
    """Validated inputs shared by every path."""

    target_unit: torch.Tensor  # (U, K) unit-norm target importance
    init: torch.Tensor  # (U, D)
    anchor: torch.Tensor  # (U, D)
    bias: torch.Tensor  # (U,)
    seen_norm: float  # mean L2 norm of the seen rows


def _prepare(
    target_importance: np.ndarray | torch.Tensor,
    seen_weight: np.ndarray | torch.Tensor,
    seen_bias: np.ndarray | torch.Tensor,
    config: TransferConfig,
    *,
    init_weight: torch.Tensor | None,
    anchor: torch.Tensor | None,
    unseen_bias: torch.Tensor | None,
) -> _Problem:
    w = _as_tensor(seen_weight)
    dtype = w.dtype if w.is_floating_point() else torch.float32
    w = w.to(dtype)
    dev = w.device
    b = _as_tensor(seen_bias, dtype, dev)
    a = _as_tensor(target_importance, dtype, dev)
    if w.ndim != 2:
        raise ValueError(f"seen_weight: expected (S, D), got {tuple(w.shape)}")
    if b.shape != (w.shape[0],):
        raise ValueError(f"seen_bias: expected ({w.shape[0]},), got {tuple(b.shape)}")
    if a.ndim != 2:
        raise ValueError(f"target_importance: expected (U, K), got {tuple(a.shape)}")
    if not torch.isfinite(a).all():
        raise ValueError("target_importance contains NaN or infinite values")
    n_unseen, dim = a.shape[0], w.shape[1]
    mean = w.mean(0)
    if init_weight is not None:
        init = _as_tensor(init_weight, dtype, dev).clone()
        if init.shape != (n_unseen, dim):
            raise ValueError(f"init_weight: expected ({n_unseen}, {dim}), got {tuple(init.shape)}")
    elif config.init == "seen_centred":
        gen = torch.Generator().manual_seed(config.seed)
        noise = torch.randn(n_unseen, dim, generator=gen, dtype=torch.float64).to(dev, dtype)
        init = mean + w.std(0, unbiased=False) * noise
    elif config.init == "mean_seen":
        init = mean.expand(n_unseen, dim).clone()
    else:
        init = torch.zeros(n_unseen, dim, dtype=dtype, device=dev)
    anc = mean if anchor is None else _as_tensor(anchor, dtype, dev)
    anc = anc.expand(n_unseen, dim).clone() if anc.ndim == 1 else anc.clone()
    if anc.shape != (n_unseen, dim):
        raise ValueError(
            f"anchor: expected ({dim},) or ({n_unseen}, {dim}), got {tuple(anc.shape)}"
        )
    if unseen_bias is not None:
        bias = _as_tensor(unseen_bias, dtype, dev).clone()
        if bias.shape != (n_unseen,):
            raise ValueError(f"unseen_bias: expected ({n_unseen},), got {tuple(bias.shape)}")
    elif config.bias == "mean_seen":
        bias = b.mean().expand(n_unseen).clone()
    elif config.bias == "zeros":
        bias = torch.zeros(n_unseen, dtype=dtype, device=dev)
    else:
        bias = torch.full((n_unseen,), float(config.bias), dtype=dtype, device=dev)
    unit = a / a.norm(dim=1, keepdim=True).clamp_min(_EPS)
    return _Problem(unit, init, anc, bias, float(w.norm(dim=1).mean()))


def _batches(n: int, config: TransferConfig) -> Iterator[torch.Tensor]:
    """Reference-image indices per step: all of them, or seeded permutations cut in batches."""
    if config.batch_size is None or config.batch_size >= n:
        everything = torch.arange(n)
        while True:
            yield everything
    gen = torch.Generator().manual_seed(config.seed + 1)
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - config.batch_size + 1, config.batch_size):
            yield order[start : start + config.batch_size]


def _chunks(idx: torch.Tensor, chunk_size: int | None) -> list[torch.Tensor]:
    return [idx] if chunk_size is None else list(idx.split(chunk_size))


# An alpha function maps (weight (U, D), image indices) -> alpha (B, U, K) with a graph to weight.
AlphaFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _optimise(
    problem: _Problem,
    alpha_fn: AlphaFn,
    *,
    n_images: int,
    config: TransferConfig,
    method: str,
    setup_s: float,
    chunk_size: int | None,
) -> TransferResult:
    """The NIWT loop shared by every path (same init, batches, loss and stopping rule)."""
    weight = problem.init.clone().requires_grad_(True)
    params = [weight]
    opt = (
        torch.optim.Adam(params, lr=config.lr)
        if config.optimizer == "adam"
        else torch.optim.SGD(params, lr=config.lr)
    )
    n_unseen = weight.shape[0]
    batches = _batches(n_images, config)
    history: list[float] = []
    best_loss, best_step, best_weight = math.inf, 0, problem.init.clone()
    ref_loss, since, reason = math.inf, 0, "max_steps"
    t0 = time.perf_counter()
    bar = tqdm(
        total=config.max_steps, disable=not config.progress, desc=f"NIWT transfer ({method})"
    )
    try:
        for step in range(config.max_steps):
            idx = next(batches)
            grad = torch.zeros_like(weight)
            cos_sum = 0.0
            for chunk in _chunks(idx, chunk_size):
                part = _mean_cos_distance_sum(alpha_fn(weight, chunk), problem.target_unit)
                part = part / (idx.numel() * n_unseen)
                (g,) = torch.autograd.grad(part, weight)
                grad += g
                cos_sum += float(part.detach())
            reg = config.lam * ((weight - problem.anchor) ** 2).sum(1).mean()
            if config.lam > 0:
                (g,) = torch.autograd.grad(reg, weight)
                grad += g
            loss = cos_sum + float(reg.detach())
            history.append(loss)
            if not math.isfinite(loss):
                reason = "non_finite"
                break
            if loss < best_loss:
                best_loss, best_step, best_weight = loss, step, weight.detach().clone()
            if loss < ref_loss * (1.0 - config.min_rel_improvement):
                ref_loss, since = loss, 0
            else:
                since += 1
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss:.5f}", best=f"{best_loss:.5f}")
            bar.update(1)
            if since >= config.patience:
                reason = "plateau"
                break
            weight.grad = grad
            opt.step()
    finally:
        bar.close()
    optimise_s = time.perf_counter() - t0
    final = best_weight
    if config.rescale_rows:
        final = final * (problem.seen_norm / final.norm(dim=1, keepdim=True).clamp_min(_EPS))
    steps = len(history)
    timings = {"setup": setup_s, "optimise": optimise_s, "per_step": optimise_s / max(steps, 1)}
    logger.info(
        "NIWT transfer (%s): %d rows, %d steps (%s), best loss %.5f at step %d, "
        "%.4f s/step, setup %.2f s",
        method,
        n_unseen,
        steps,
        reason,
        best_loss,
        best_step,
        timings["per_step"],
        setup_s,
    )
    return TransferResult(
        weight=final.detach(),
        bias=problem.bias,
        history=history,
        steps=steps,
        stopped_reason=reason,
        best_step=best_step,
        best_loss=best_loss,
        method=method,
        timings=timings,
    )


@dataclass
class GramMoments:
    """What the ``least_squares`` solver needs of G: ``moment`` (D, D) = sum_x G^T G,
    ``total`` (K, D) = sum_x G, ``scale`` = the seen rows' mean importance norm, ``n_images``.
    Independent of the targets, so one computation serves every candidate of a grid."""

    moment: torch.Tensor
    total: torch.Tensor
    scale: float
    n_images: int


def gram_moments(
    gram_chunks: Iterable[torch.Tensor], seen_weight: np.ndarray | torch.Tensor
) -> GramMoments:
    """Stream G (chunks of (n, K, D)) once into :class:`GramMoments` (float64)."""
    w_seen = _as_tensor(seen_weight, torch.float64)
    moment = total = None
    norm_sum, n_images = 0.0, 0
    for chunk in gram_chunks:
        g = chunk.detach().to(dtype=torch.float64)
        if moment is None:
            w_seen = w_seen.to(g.device)
            moment = torch.zeros(g.shape[2], g.shape[2], dtype=torch.float64, device=g.device)
            total = torch.zeros(g.shape[1], g.shape[2], dtype=torch.float64, device=g.device)
        moment += torch.einsum("nkd,nke->de", g, g)
        total += g.sum(0)
        norm_sum += float(torch.einsum("nkd,sd->nsk", g, w_seen).norm(dim=2).sum())
        n_images += g.shape[0]
    if moment is None or n_images == 0:
        raise ValueError("transfer_rows(solver='least_squares'): no reference images")
    return GramMoments(moment, total, norm_sum / (n_images * w_seen.shape[0]), n_images)


def _least_squares(
    problem: _Problem,
    moments: GramMoments,
    alpha_fn: AlphaFn,
    config: TransferConfig,
    *,
    method: str,
    setup_s: float,
) -> TransferResult:
    """The ``least_squares`` solver: solve for every row at once from the moments of G,
    then report the mean cosine loss on the reference images."""
    t0 = time.perf_counter()
    dev = problem.init.device
    moment, total = moments.moment.to(dev), moments.total.to(dev)
    dim = moment.shape[0]
    if total.shape != (problem.target_unit.shape[1], problem.init.shape[1]):
        raise ValueError(
            f"gram moments: expected ({problem.target_unit.shape[1]}, {problem.init.shape[1]}), "
            f"got {tuple(total.shape)}"
        )
    ridge = config.ls_alpha * float(torch.trace(moment)) / dim
    target = problem.target_unit.to(torch.float64)
    rhs = moments.scale * total.T @ target.T + ridge * problem.anchor.to(torch.float64).T
    system = moment + ridge * torch.eye(dim, dtype=torch.float64, device=dev)
    weight = torch.linalg.lstsq(system, rhs).solution.T.to(problem.init.dtype)
    with torch.no_grad():
        loss = 0.0
        for idx in torch.arange(moments.n_images).split(config.chunk_size or 256):
            loss += float(_mean_cos_distance_sum(alpha_fn(weight, idx), problem.target_unit))
        loss /= moments.n_images * weight.shape[0]
    if config.rescale_rows:
        weight = weight * (problem.seen_norm / weight.norm(dim=1, keepdim=True).clamp_min(_EPS))
    seconds = time.perf_counter() - t0
    logger.info(
        "NIWT transfer (%s, least squares): %d rows from %d images, cosine loss %.5f, %.2f s",
        method,
        weight.shape[0],
        moments.n_images,
        loss,
        seconds,
    )
    return TransferResult(
        weight=weight.detach(),
        bias=problem.bias,
        history=[loss],
        steps=0,
        stopped_reason="closed_form",
        best_step=0,
        best_loss=loss,
        method=method,
        timings={"setup": setup_s, "optimise": seconds, "per_step": seconds},
    )


def _gram_alpha_fn(gram: torch.Tensor) -> AlphaFn:
    def alpha(weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nkd,ud->nuk", gram[idx], weight)

    return alpha


def _head_alpha_fn(
    head: nn.Module, activations: torch.Tensor, use_vmap: bool, chunk_size: int | None
) -> AlphaFn:
    """alpha_u(x) as the VJP of ``z = head(A(x))`` with cotangent ``w_u``, summed over positions."""
    f = _functional(head)

    def alpha(weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        a = activations[idx]
        z, vjp_fn = vjp(f, a)
        cot = weight.to(z.dtype).unsqueeze(1).expand(weight.shape[0], a.shape[0], z.shape[1])
        if use_vmap:
            (g,) = vmap(vjp_fn, chunk_size=chunk_size)(cot)  # (U, B, K, ...)
        else:
            g = torch.stack([vjp_fn(c)[0] for c in cot])
        return _spatial_sum(g, 3).transpose(0, 1)  # (B, U, K)

    return alpha


def transfer_rows(
    target_importance: np.ndarray | torch.Tensor,
    seen_weight: np.ndarray | torch.Tensor,
    seen_bias: np.ndarray | torch.Tensor,
    config: TransferConfig | None = None,
    *,
    gram: torch.Tensor | None = None,
    head: nn.Module | None = None,
    activations: torch.Tensor | None = None,
    init_weight: torch.Tensor | None = None,
    anchor: torch.Tensor | None = None,
    unseen_bias: torch.Tensor | None = None,
    moments: GramMoments | None = None,
) -> TransferResult:
    """Optimise new classifier rows whose importance matches ``target_importance``.

    Args:
        target_importance: (U, K) mapper-predicted importance of each unseen class.
        seen_weight: (S, D) seen classifier rows; seen_bias: (S,) their biases.
        config: hyper-parameters (``config.method`` picks the path).
        gram: (N, K, D) from :func:`reference_gram` (the ``gram`` path).
        head: A -> z (B, D) and ``activations`` (N, K, ...) cached at the layer for the
            reference images (the ``head`` path, and ``auto`` without ``gram``).
        init_weight: (U, D) start rows overriding ``config.init`` (e.g. ridge-predicted rows).
        anchor: (D,) or (U, D) rows the ``lam`` term pulls toward; default the mean seen row.
        unseen_bias: (U,) biases overriding ``config.bias``.
        moments: :func:`gram_moments` of the same reference images, reused by the
            ``least_squares`` solver instead of computing them again.

    Returns:
        :class:`TransferResult`; the head's train/eval flags and parameters are unchanged.
    """
    config = config or TransferConfig()
    problem = _prepare(
        target_importance,
        seen_weight,
        seen_bias,
        config,
        init_weight=init_weight,
        anchor=anchor,
        unseen_bias=unseen_bias,
    )
    dtype = problem.init.dtype
    method = config.method
    t0 = time.perf_counter()
    if gram is not None and method in ("gram", "auto"):
        g = gram.detach().to(dtype=dtype, device=problem.init.device)
        method = "gram"
    else:
        if head is None or activations is None:
            raise ValueError(
                f"transfer_rows(method={config.method!r}) needs gram=, or head= and activations="
            )
        acts = activations.detach().to(dtype=dtype, device=problem.init.device)
        if method == "auto":
            with eval_mode(head), torch.no_grad():
                d = head(acts[:1]).shape[1]
            need = acts.shape[0] * acts.shape[1] * d * acts.element_size()
            method = "gram" if need <= config.gram_memory_budget_bytes else "head"
            logger.info("transfer_rows: G needs %.1f MiB -> %s path", need / 2**20, method)
        if method == "gram":
            g = reference_gram(
                head,
                acts,
                batch_size=config.chunk_size or 32,
                mode=config.gram_mode,
                chunk_size=config.vmap_chunk_size,
                progress=config.progress,
            )
    if method == "gram":
        k = problem.target_unit.shape[1]
        if g.ndim != 3 or g.shape[1] != k or g.shape[2] != problem.init.shape[1]:
            raise ValueError(
                f"gram: expected (N, {k}, {problem.init.shape[1]}), got {tuple(g.shape)}"
            )
        setup = time.perf_counter() - t0
        if config.solver == "least_squares":
            moments = moments or gram_moments([g], seen_weight)
            setup = time.perf_counter() - t0
            return _least_squares(
                problem, moments, _gram_alpha_fn(g), config, method="gram", setup_s=setup
            )
        return _optimise(
            problem,
            _gram_alpha_fn(g),
            n_images=g.shape[0],
            config=config,
            method="gram",
            setup_s=setup,
            chunk_size=None,
        )
    with eval_mode(head):
        setup = time.perf_counter() - t0
        if config.solver == "least_squares":
            step = config.chunk_size or 32
            if moments is None:
                chunks = (
                    reference_gram(
                        head,
                        acts[i : i + step],
                        batch_size=step,
                        mode=config.gram_mode,
                        chunk_size=config.vmap_chunk_size,
                        progress=False,
                    )
                    for i in range(0, acts.shape[0], step)
                )
                moments = gram_moments(chunks, seen_weight)
            setup = time.perf_counter() - t0
            alpha_fn = _head_alpha_fn(head, acts, config.head_vmap, config.vmap_chunk_size)
            return _least_squares(problem, moments, alpha_fn, config, method="head", setup_s=setup)
        return _optimise(
            problem,
            _head_alpha_fn(head, acts, config.head_vmap, config.vmap_chunk_size),
            n_images=acts.shape[0],
            config=config,
            method="head",
            setup_s=setup,
            chunk_size=config.chunk_size,
        )


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
    """The slow reference loop: every step runs the whole network on the reference images.

    The network is ``classifier`` with the new rows appended, on top of ``head(stem(x))``;
    the importance of each new row is ``autograd.grad`` of its logit w.r.t. the layer
    activations ``A = stem(x)``, summed over positions.  Same init, batches, loss, optimiser
    and stopping rule as :func:`transfer_rows`, so it must give the same rows; only for
    tests and timing.  ``config.method`` is ignored.

    Args:
        target_importance: (U, K); stem: x -> A (B, K, ...); head: A -> z (B, D);
        classifier: the seen ``nn.Linear(D, S)``; images: (N, C, H, W) reference images.
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
