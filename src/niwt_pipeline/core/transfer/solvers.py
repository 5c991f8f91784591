"""The NIWT solvers: the gradient loop of the paper and the closed-form least-squares rows.

``loss = mean_u [ mean_x (1 - cos(G(x) w_u, a_u)) + lam * ||w_u - anchor_u||^2 ]``
(Selvaraju et al., ECCV 2018, eq. 3), minimised with Adam and stopped when the loss has
not improved by ``min_rel_improvement`` for ``patience`` steps, keeping the rows with the
lowest training loss (as the authors' code does); or, with ``solver="least_squares"``, the
rows matching the target importance on every reference image in L2, in closed form.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import vjp, vmap
from tqdm.auto import tqdm

from niwt_pipeline.core.transfer.config import TransferConfig, TransferResult
from niwt_pipeline.core.transfer.gram import (
    GramMoments,
    _as_tensor,
    _functional,
    _spatial_sum,
    eval_mode,
    gram_moments,
    reference_gram,
)

logger = logging.getLogger(__name__)

_EPS = 1e-12


def _mean_cos_distance_sum(alpha: torch.Tensor, target_unit: torch.Tensor) -> torch.Tensor:
    """Sum over (b, u) of ``1 - cos(alpha[b, u], target[u])``; alpha (B, U, K), target (U, K)."""
    num = torch.einsum("buk,uk->bu", alpha, target_unit)
    den = alpha.norm(dim=-1).clamp_min(_EPS)
    return (1.0 - num / den).sum()


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
            squares = ((weight - problem.anchor) ** 2).sum(1)
            reg = config.lam * (
                squares.mean() if config.reg_reduction == "mean" else 0.5 * squares.sum()
            )
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
    gram_budget_bytes: int = 2 * 1024**3,
) -> TransferResult:
    """Optimise new classifier rows whose importance matches ``target_importance``.

    Args:
        target_importance: (U, K) mapper-predicted importance of each unseen class.
        seen_weight: (S, D) seen classifier rows; seen_bias: (S,) their biases.
        config: hyper-parameters (``config.method`` picks the path).
        gram_budget_bytes: with ``head`` and ``activations`` and ``method="auto"``, G is
            computed (the ``gram`` path) when ``N * K * D * itemsize`` fits in this budget.
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

    Raises:
        ValueError: if ``seen_weight``, ``seen_bias``, ``target_importance`` (2-D, finite),
            ``init_weight``, ``anchor`` or ``unseen_bias`` has the wrong shape; neither
            ``gram`` nor both ``head`` and ``activations`` are given (or ``gram`` with
            ``method="head"``); ``gram`` or ``moments`` do not match (N, K, D); or the head
            does not return (B, D) features (see :func:`reference_gram`).
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
            method = "gram" if need <= gram_budget_bytes else "head"
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
