"""The Gram tensor ``G(x) = sum over positions of dz/dA`` of the reference images.

The importance of a classifier row ``w`` on image ``x`` (Selvaraju et al., "Choose Your
Neuron", ECCV 2018, eq. 1, with the spatial sum of the authors' code) is
``alpha_w(x) = G(x) w`` (linear in ``w``), so ``G`` of the reference images, computed once
by autograd, turns each weight-transfer step into one tensor contraction.
:class:`GramMoments` holds what the closed-form least-squares solver needs of it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jvp, vjp, vmap
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


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

    Raises:
        ValueError: if ``mode`` is not ``"auto"``, ``"vjp"`` or ``"jvp"``, ``head`` does not
            return (B, D) features, or ``activations`` holds no batch.
        NotImplementedError, RuntimeError: with ``mode="jvp"``, when the head has an op
            without forward-mode support (``"auto"`` falls back to vjp instead).
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


def _as_tensor(
    x: np.ndarray | torch.Tensor,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))
    return t.to(dtype=dtype if dtype is not None else t.dtype, device=device)


@dataclass
class GramMoments:
    """What the ``least_squares`` solver needs of G: ``moment`` (D, D) = sum_x G^T G,
    ``total`` (K, D) = sum_x G, ``scale`` = the seen rows' mean importance norm, ``n_images``.
    Independent of the targets, so one computation serves every candidate of a grid."""

    moment: torch.Tensor
    total: torch.Tensor
    scale: float
    n_images: int


#: Images per float64 step of :func:`gram_moments`.
MOMENT_CHUNK = 32


def gram_moments(
    gram_chunks: Iterable[torch.Tensor], seen_weight: np.ndarray | torch.Tensor
) -> GramMoments:
    """Stream G (chunks of (n, K, D)) once into :class:`GramMoments` (float64), converting
    at most :data:`MOMENT_CHUNK` images at a time.

    Args:
        gram_chunks: chunks of G, each (n, K, D).
        seen_weight: (S, D) seen classifier rows, for the importance scale.

    Raises:
        ValueError: if ``gram_chunks`` yields no image.
    """
    w_seen = _as_tensor(seen_weight, torch.float64)
    moment = total = None
    norm_sum, n_images = 0.0, 0
    # float64 copies of at most MOMENT_CHUNK images at a time: memory does not grow with N
    pieces = (piece for chunk in gram_chunks for piece in chunk.detach().split(MOMENT_CHUNK))
    for piece in pieces:
        g = piece.to(dtype=torch.float64)
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
