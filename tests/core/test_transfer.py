"""NIWT weight transfer: exact G, the efficient paths against the naive loop, the optimiser."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from niwt_pipeline.core.transfer import (
    PAPER_SETTINGS,
    TransferConfig,
    eval_mode,
    gram_moments,
    paper_config,
    reference_gram,
    row_importance,
    transfer_rows,
    transfer_rows_naive,
)

# torch's first forward-mode use of batch norm scripts a decomposition and warns about it
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


class SumLinear(nn.Module):
    """z = M @ (sum over positions of A): dz_d/dA_{k,p} = M[d, k] at every position p."""

    def __init__(self, m: torch.Tensor) -> None:
        super().__init__()
        self.m = nn.Parameter(m.clone())

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a.sum(dim=(2, 3)) @ self.m.T


class HalfSquare(nn.Module):
    """z_d = 1/2 sum_p (M A_p)_d^2: dz_d/dA_{k,p} = M[d,k] (M A_p)_d, so
    G[k, d] = M[d, k] * sum_p (M A_p)_d."""

    def __init__(self, m: torch.Tensor) -> None:
        super().__init__()
        self.m = nn.Parameter(m.clone())

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        ma = torch.einsum("dk,bkhw->bdhw", self.m, a)
        return 0.5 * (ma**2).sum(dim=(2, 3))


def make_net(seed: int = 0, *, k: int = 4, d: int = 6, s: int = 5, n: int = 10, u: int = 2):
    """A tiny conv stem/head/classifier with weights set from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    stem = nn.Sequential(nn.Conv2d(3, k, 3, padding=1), nn.ReLU())
    head = nn.Sequential(
        nn.Conv2d(k, 5, 3, padding=1),
        nn.BatchNorm2d(5),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, d),
    )
    clf = nn.Linear(d, s)
    with torch.no_grad():
        for module in (stem, head, clf):
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        bn = head[1]
        bn.running_mean.copy_(torch.randn(5, generator=gen) * 0.1)
        bn.running_var.copy_(torch.rand(5, generator=gen) + 0.5)
    images = torch.randn(n, 3, 8, 8, generator=gen)
    target = torch.randn(u, k, generator=gen)
    return stem, head, clf, images, target


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return fn(*args, **kwargs)


# --- reference_gram: exact values ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["vjp", "jvp"])
def test_reference_gram_linear_head_is_transposed_weight(mode):
    m = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]])  # D=3, K=2
    acts = torch.arange(2 * 2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 2, 3)
    g = reference_gram(SumLinear(m), acts, mode=mode)
    # sum over the 2x3 positions of dz/dA = 6 M^T for every image, whatever A is:
    # [[6, 18, 3], [12, -6, 0]]
    assert g.shape == (2, 2, 3)
    expected = torch.tensor([[6.0, 18.0, 3.0], [12.0, -6.0, 0.0]])
    torch.testing.assert_close(g, expected.expand(2, 2, 3), rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["vjp", "jvp", "auto"])
def test_reference_gram_quadratic_head_exact(mode):
    m = torch.tensor([[1.0, 2.0], [0.0, 1.0]])  # D=2, K=2
    # image 0, positions (1x2): p0 = (A0, A1) = (1, 0), p1 = (0, 1)
    #   M p0 = (1, 0), M p1 = (2, 1) -> sum_p M A_p = (3, 1)
    #   G[k, d] = M[d, k] * (3, 1)[d] = [[1*3, 0*1], [2*3, 1*1]] = [[3, 0], [6, 1]]
    # image 1: p0 = (1, 1), p1 = (-1, 2): M p0 = (3, 1), M p1 = (3, 2) -> sums (6, 3)
    #   G = [[1*6, 0*3], [2*6, 1*3]] = [[6, 0], [12, 3]]
    acts = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]], [[[1.0, -1.0]], [[1.0, 2.0]]]])
    g = _quiet(reference_gram, HalfSquare(m), acts, mode=mode, batch_size=1)
    expected = torch.tensor([[[3.0, 0.0], [6.0, 1.0]], [[6.0, 0.0], [12.0, 3.0]]])
    torch.testing.assert_close(g, expected, rtol=0, atol=0)


def test_reference_gram_matches_direct_importance_and_is_path_independent():
    stem, head, clf, images, _ = make_net()
    with torch.no_grad():
        acts = stem(images)
    g_vjp = reference_gram(head, acts, batch_size=3, mode="vjp", chunk_size=2)
    g_jvp = _quiet(reference_gram, head, acts, batch_size=4, mode="jvp", chunk_size=None)
    loader = [(acts[:6], "ignored"), (acts[6:], "ignored")]
    g_loader = reference_gram(head, loader, mode="vjp", chunk_size=None)
    torch.testing.assert_close(g_vjp, g_jvp, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_vjp, g_loader, rtol=1e-5, atol=1e-6)
    # importance of a seen row by plain autograd (eval mode) = G @ w
    a = acts.clone().requires_grad_(True)
    with eval_mode(head):
        logit = clf(head(a))[:, 3].sum()
    (grad,) = torch.autograd.grad(logit, a)
    direct = grad.sum(dim=(2, 3))
    torch.testing.assert_close(
        row_importance(g_vjp, clf.weight[3:4])[:, 0], direct, rtol=1e-5, atol=1e-6
    )


def test_reference_gram_leaves_head_untouched():
    _, head, _, _, _ = make_net()
    head.train()
    before = {k: v.clone() for k, v in head.state_dict().items()}
    acts = torch.randn(4, 4, 8, 8)
    _quiet(reference_gram, head, acts)
    assert head.training and all(m.training for m in head.modules())
    assert all(p.grad is None for p in head.parameters())
    for k, v in head.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


# --- the efficient paths give the naive loop's rows ---------------------------------------------


def test_gram_and_head_paths_equal_naive_loop():
    stem, head, clf, images, target = make_net()
    head.train()  # every path must run it in eval mode and restore this
    cfg = TransferConfig(max_steps=30, patience=1000, lr=1e-2, lam=1e-2, seed=3, progress=False)
    with torch.no_grad(), eval_mode(head):
        acts = stem(images)
    g = _quiet(reference_gram, head, acts)
    gram = transfer_rows(target, clf.weight, clf.bias, cfg, gram=g)
    via_head = transfer_rows(
        target,
        clf.weight,
        clf.bias,
        TransferConfig(**{**cfg.__dict__, "method": "head"}),
        head=head,
        activations=acts,
    )
    naive = transfer_rows_naive(target, stem, head, clf, images, config=cfg)
    assert (gram.method, via_head.method, naive.method) == ("gram", "head", "naive")
    assert gram.steps == via_head.steps == naive.steps == 30
    assert gram.best_step == naive.best_step == 29  # the loss fell at every step here
    assert naive.history[-1] < 0.8 * naive.history[0]
    torch.testing.assert_close(gram.weight, naive.weight, rtol=0, atol=1e-5)
    torch.testing.assert_close(via_head.weight, naive.weight, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        torch.tensor(gram.history), torch.tensor(naive.history), atol=1e-6, rtol=0
    )
    assert head.training
    for module in (stem, head, clf):
        assert all(p.grad is None for p in module.parameters())


# --- the least-squares solver ------------------------------------------------------------------


def _sum_linear_problem():
    """G(x) = P * M^T for every image (P = 4 positions), M invertible 3 x 3."""
    m = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 3.0]], dtype=torch.float64)
    head = SumLinear(m)
    acts = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2) / 10
    seen_w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    seen_b = torch.tensor([0.5, -0.5], dtype=torch.float64)
    target = torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]], dtype=torch.float64)
    return head, acts, m, seen_w, seen_b, target


def test_least_squares_rows_have_the_exact_closed_form():
    head, acts, m, seen_w, seen_b, target = _sum_linear_problem()
    g = _quiet(reference_gram, head, acts)
    torch.testing.assert_close(g, (4 * m.T).expand(2, 3, 3))
    cfg = TransferConfig(solver="least_squares", ls_alpha=0.0, rescale_rows=False, progress=False)
    result = transfer_rows(target, seen_w, seen_b, cfg, gram=g)
    # s = mean norm of the seen rows' importance P M^T w_s; w = (s / P) M^-T a / ||a||
    s = (4 * m.T @ seen_w.T).norm(dim=0).mean()
    unit = target / target.norm(dim=1, keepdim=True)
    expected = (s / 4) * torch.linalg.solve(m.T, unit.T).T
    torch.testing.assert_close(result.weight, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(result.bias, seen_b.mean().expand(2))
    assert result.best_loss == pytest.approx(0.0, abs=1e-12)  # importance matches exactly
    assert (result.steps, result.stopped_reason) == (0, "closed_form")
    rescaled = transfer_rows(
        target, seen_w, seen_b, TransferConfig(**{**cfg.__dict__, "rescale_rows": True}), gram=g
    )
    torch.testing.assert_close(
        rescaled.weight.norm(dim=1), seen_w.norm(dim=1).mean().expand(2), rtol=1e-12, atol=0
    )


def test_least_squares_ridge_pulls_rows_to_the_anchor():
    head, acts, _, seen_w, seen_b, target = _sum_linear_problem()
    g = _quiet(reference_gram, head, acts)
    cfg = TransferConfig(solver="least_squares", ls_alpha=1e9, rescale_rows=False, progress=False)
    anchor = torch.tensor([[1.0, 1.0, 1.0], [-1.0, 0.0, 2.0]], dtype=torch.float64)
    pulled = transfer_rows(target, seen_w, seen_b, cfg, gram=g, anchor=anchor)
    torch.testing.assert_close(pulled.weight, anchor, rtol=0, atol=1e-6)
    to_mean = transfer_rows(target, seen_w, seen_b, cfg, gram=g)
    torch.testing.assert_close(to_mean.weight, seen_w.mean(0).expand(2, 3), rtol=0, atol=1e-6)


def test_least_squares_with_precomputed_moments_gives_the_same_rows():
    head, acts, _, seen_w, seen_b, target = _sum_linear_problem()
    g = _quiet(reference_gram, head, acts)
    cfg = TransferConfig(solver="least_squares", ls_alpha=0.1, progress=False)
    moments = gram_moments([g[:1], g[1:]], seen_w)  # streamed in two chunks
    assert moments.n_images == 2
    torch.testing.assert_close(moments.moment, torch.einsum("nkd,nke->de", g, g))
    reused = transfer_rows(target, seen_w, seen_b, cfg, gram=g, moments=moments)
    fresh = transfer_rows(target, seen_w, seen_b, cfg, gram=g)
    torch.testing.assert_close(reused.weight, fresh.weight, rtol=0, atol=0)


def test_least_squares_head_path_equals_gram_path():
    stem, head, clf, images, target = make_net()
    with torch.no_grad(), eval_mode(head):
        acts = stem(images)
    g = _quiet(reference_gram, head, acts)
    cfg = TransferConfig(solver="least_squares", ls_alpha=1e-2, progress=False, chunk_size=3)
    via_gram = transfer_rows(target, clf.weight, clf.bias, cfg, gram=g)
    via_head = _quiet(
        transfer_rows,
        target,
        clf.weight,
        clf.bias,
        TransferConfig(**{**cfg.__dict__, "method": "head"}),
        head=head,
        activations=acts,
    )
    assert (via_gram.method, via_head.method) == ("gram", "head")
    torch.testing.assert_close(via_head.weight, via_gram.weight, rtol=1e-4, atol=1e-5)
    assert via_head.best_loss == pytest.approx(via_gram.best_loss, abs=1e-5)
    assert all(p.grad is None for p in head.parameters())


def test_minibatches_and_chunks_give_the_same_rows():
    stem, head, clf, images, target = make_net(seed=1, n=12)
    cfg = TransferConfig(
        max_steps=12, patience=1000, lr=1e-2, lam=1e-3, batch_size=4, seed=5, progress=False
    )
    with torch.no_grad():
        acts = stem(images)
    gram = transfer_rows(target, clf.weight, clf.bias, cfg, gram=_quiet(reference_gram, head, acts))
    chunked = TransferConfig(
        **{**cfg.__dict__, "method": "head", "chunk_size": 3, "head_vmap": True}
    )
    via_head = transfer_rows(target, clf.weight, clf.bias, chunked, head=head, activations=acts)
    naive = transfer_rows_naive(
        target, stem, head, clf, images, config=TransferConfig(**{**cfg.__dict__, "chunk_size": 2})
    )
    torch.testing.assert_close(gram.weight, naive.weight, rtol=0, atol=1e-5)
    torch.testing.assert_close(via_head.weight, naive.weight, rtol=0, atol=1e-5)


def test_auto_picks_gram_or_head_by_memory():
    stem, head, clf, images, target = make_net()
    with torch.no_grad():
        acts = stem(images)
    base = dict(max_steps=2, progress=False, method="auto")
    big = transfer_rows(
        target, clf.weight, clf.bias, TransferConfig(**base), head=head, activations=acts
    )
    # G is N * K * D * 4 = 10 * 4 * 6 * 4 = 960 bytes: it fits exactly, one byte less does not
    exact, tight = (
        transfer_rows(
            target,
            clf.weight,
            clf.bias,
            TransferConfig(**base),
            head=head,
            activations=acts,
            gram_budget_bytes=budget,
        )
        for budget in (960, 959)
    )
    assert (big.method, exact.method, tight.method) == ("gram", "gram", "head")
    torch.testing.assert_close(big.weight, tight.weight, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="needs gram"):
        transfer_rows(target, clf.weight, clf.bias, TransferConfig(**base))


# --- the optimiser: regulariser, stopping rule, kept rows, init -------------------------------


def _one_channel_problem(n_unseen: int = 2, seed: int = 0):
    """K = 1: cos(G w, a) is +-1 with zero gradient, so only the lam term moves the rows."""
    gen = torch.Generator().manual_seed(seed)
    gram = torch.rand(7, 1, 3, generator=gen, dtype=torch.float64) + 0.5  # (N, K=1, D=3)
    seen_w = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    seen_b = torch.randn(4, generator=gen, dtype=torch.float64)
    target = torch.ones(n_unseen, 1, dtype=torch.float64)
    return gram, seen_w, seen_b, target


def test_lambda_only_sgd_contracts_to_mean_row_exactly():
    gram, seen_w, seen_b, target = _one_channel_problem(n_unseen=2)
    lr, lam, steps = 0.1, 0.5, 20
    cfg = TransferConfig(
        lr=lr, lam=lam, max_steps=steps, patience=1000, optimizer="sgd", seed=4, progress=False
    )
    w0 = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 4.0]], dtype=torch.float64)
    res = transfer_rows(target, seen_w, seen_b, cfg, gram=gram, init_weight=w0)
    mean = seen_w.mean(0)
    # loss = cos-term (constant) + lam * mean_u ||w_u - m||^2: gradient 2 lam (w_u - m) / U,
    # so w_t - m = (1 - 2 lr lam / U)^t (w_0 - m) = 0.95^t (w_0 - m); the kept rows are
    # the last evaluated ones, t = steps - 1 (the loss fell every step)
    factor = (1 - 2 * lr * lam / 2) ** (steps - 1)
    assert res.best_step == steps - 1
    torch.testing.assert_close(res.weight, mean + factor * (w0 - mean), rtol=0, atol=1e-12)
    # the cos part is 0 (G w > 0 and a > 0 point the same way): loss = lam * mean distance^2
    dist0 = float(((w0 - mean) ** 2).sum(1).mean())
    assert res.history[0] == pytest.approx(lam * dist0, abs=1e-12)
    assert res.history[1] == pytest.approx(lam * dist0 * 0.95**2, abs=1e-12)


def test_half_sum_regulariser_is_the_authors_l2_loss():
    # the authors' tf.nn.l2_loss: lam * 0.5 * sum_u ||w_u - m||^2, gradient lam (w_u - m),
    # so with plain SGD w_t - m = (1 - lr lam)^t (w_0 - m) = 0.9^t (w_0 - m) whatever U is
    gram, seen_w, seen_b, target = _one_channel_problem(n_unseen=2)
    lr, lam, steps = 0.2, 0.5, 6
    cfg = TransferConfig(
        lr=lr,
        lam=lam,
        max_steps=steps,
        patience=1000,
        optimizer="sgd",
        reg_reduction="half_sum",
        progress=False,
    )
    w0 = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 4.0]], dtype=torch.float64)
    res = transfer_rows(target, seen_w, seen_b, cfg, gram=gram, init_weight=w0)
    mean = seen_w.mean(0)
    factor = 0.9 ** (steps - 1)
    torch.testing.assert_close(res.weight, mean + factor * (w0 - mean), rtol=0, atol=1e-12)
    assert res.history[0] == pytest.approx(lam * 0.5 * float(((w0 - mean) ** 2).sum()))


def test_paper_config_is_the_published_setting_per_dataset():
    cub, awa2 = paper_config("cub", seed=3), paper_config("awa2")
    assert (cub.lr, cub.lam) == (1e-4, 1e-2) and (awa2.lr, awa2.lam) == (1e-3, 1e-3)
    assert PAPER_SETTINGS == {"cub": {"lr": 1e-4, "lam": 1e-2}, "awa2": {"lr": 1e-3, "lam": 1e-3}}
    for config in (cub, awa2):
        assert (config.optimizer, config.init, config.solver) == (
            "adam",
            "seen_centred",
            "gradient",
        )
        assert (config.patience, config.min_rel_improvement, config.batch_size) == (40, 0.01, 32)
        assert (config.reg_reduction, config.bias, config.rescale_rows) == (
            "half_sum",
            "zeros",
            False,
        )
    assert cub.seed == 3
    with pytest.raises(ValueError, match=r"paper settings: expected one of \('cub', 'awa2'\)"):
        paper_config("sun")


def test_lambda_only_adam_moves_rows_toward_mean_row():
    gram, seen_w, seen_b, target = _one_channel_problem(n_unseen=3)
    cfg = TransferConfig(lr=0.05, lam=1.0, max_steps=60, patience=1000, seed=2, progress=False)
    init = transfer_rows(
        target, seen_w, seen_b, TransferConfig(**{**cfg.__dict__, "max_steps": 1}), gram=gram
    )
    res = transfer_rows(target, seen_w, seen_b, cfg, gram=gram)
    mean = seen_w.mean(0)
    before = (init.weight - mean).norm(dim=1)
    after = (res.weight - mean).norm(dim=1)
    assert torch.all(after < 0.5 * before)
    assert res.history[-1] < res.history[0]


def test_plateau_stops_after_patience_and_keeps_first_rows():
    gram, seen_w, seen_b, target = _one_channel_problem()
    cfg = TransferConfig(lam=0.0, patience=7, max_steps=100, seed=1, progress=False)
    res = transfer_rows(target, seen_w, seen_b, cfg, gram=gram)
    first = transfer_rows(
        target, seen_w, seen_b, TransferConfig(**{**cfg.__dict__, "max_steps": 1}), gram=gram
    )
    # constant loss: no 1% improvement after step 0, so steps 1..7 exhaust the patience
    assert res.stopped_reason == "plateau"
    assert res.steps == 8 and res.best_step == 0
    torch.testing.assert_close(res.weight, first.weight, rtol=0, atol=0)


def test_small_improvements_do_not_reset_patience():
    gram, seen_w, seen_b, target = _one_channel_problem()
    # SGD on lam only: loss shrinks by 0.999^2 (0.2%) a step, below the 1% threshold, so the
    # run stops after `patience` steps although the loss kept falling; the best rows are kept
    cfg = TransferConfig(
        lr=0.001, lam=0.5, patience=5, max_steps=100, optimizer="sgd", seed=1, progress=False
    )
    res = transfer_rows(target, seen_w, seen_b, cfg, gram=gram)
    assert res.stopped_reason == "plateau" and res.steps == 6 and res.best_step == 5
    assert all(b < a for a, b in zip(res.history, res.history[1:], strict=False))


def test_keeps_lowest_loss_rows_when_the_loss_rises():
    gram, seen_w, seen_b, target = _one_channel_problem()
    # SGD with lr * lam = 3: w - m is multiplied by 1 - 3 = -2 each step, the loss rises
    cfg = TransferConfig(
        lr=3.0, lam=1.0, max_steps=10, patience=1000, optimizer="sgd", seed=9, progress=False
    )
    res = transfer_rows(target, seen_w, seen_b, cfg, gram=gram)
    gen = torch.Generator().manual_seed(9)
    noise = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    seen_centred = seen_w.mean(0) + seen_w.std(0, unbiased=False) * noise
    assert res.best_step == 0 and res.history[-1] > res.history[0]
    torch.testing.assert_close(res.weight, seen_centred, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.bias, seen_b.mean().expand(2), rtol=0, atol=0)


def test_init_bias_anchor_and_rescale_options():
    gram, seen_w, seen_b, target = _one_channel_problem()
    one = dict(max_steps=1, progress=False)
    mean = seen_w.mean(0)
    r = transfer_rows(
        target, seen_w, seen_b, TransferConfig(**one, init="mean_seen", bias="zeros"), gram=gram
    )
    torch.testing.assert_close(r.weight, mean.expand(2, 3), rtol=0, atol=0)
    torch.testing.assert_close(r.bias, torch.zeros(2, dtype=torch.float64), rtol=0, atol=0)
    r = transfer_rows(
        target, seen_w, seen_b, TransferConfig(**one, init="zeros", bias=-1.5), gram=gram
    )
    assert torch.all(r.weight == 0) and torch.all(r.bias == -1.5)
    # explicit start rows and biases; the anchor sets the lam term
    w0 = torch.ones(2, 3, dtype=torch.float64)
    r = transfer_rows(
        target,
        seen_w,
        seen_b,
        TransferConfig(**one, lam=2.0),
        gram=gram,
        init_weight=w0,
        anchor=torch.zeros(3, dtype=torch.float64),
        unseen_bias=torch.tensor([0.25, 0.5], dtype=torch.float64),
    )
    assert r.history[0] == pytest.approx(2.0 * 3.0)  # lam * ||1 - 0||^2, cos part 0
    torch.testing.assert_close(r.bias, torch.tensor([0.25, 0.5], dtype=torch.float64))
    r = transfer_rows(target, seen_w, seen_b, TransferConfig(**one, rescale_rows=True), gram=gram)
    norms = r.weight.norm(dim=1)
    torch.testing.assert_close(norms, seen_w.norm(dim=1).mean().expand(2), rtol=1e-12, atol=0)


def test_inputs_are_not_modified_and_dtype_follows_seen_rows():
    gram, seen_w, seen_b, target = _one_channel_problem()
    copies = [t.clone() for t in (gram, seen_w, seen_b, target)]
    res = transfer_rows(
        target, seen_w, seen_b, TransferConfig(max_steps=5, progress=False), gram=gram
    )
    for t, c in zip((gram, seen_w, seen_b, target), copies, strict=True):
        torch.testing.assert_close(t, c, rtol=0, atol=0)
    assert res.weight.dtype == torch.float64 and not res.weight.requires_grad
    assert set(res.timings) == {"setup", "optimise", "per_step"}


@pytest.mark.parametrize(
    "bad",
    [
        {"lr": 0.0},
        {"lam": -1.0},
        {"max_steps": 0},
        {"patience": 0},
        {"min_rel_improvement": 1.0},
        {"init": "ridge"},
        {"bias": "seen"},
        {"batch_size": 0},
        {"method": "fast"},
        {"optimizer": "lbfgs"},
        {"gram_mode": "both"},
        {"solver": "newton"},
        {"ls_alpha": -1.0},
        {"reg_reduction": "sum"},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="TransferConfig"):
        TransferConfig(**bad)


def test_shape_errors_are_reported():
    gram, seen_w, seen_b, target = _one_channel_problem()
    cfg = TransferConfig(max_steps=1, progress=False)
    with pytest.raises(ValueError, match="gram: expected"):
        transfer_rows(target, seen_w, seen_b, cfg, gram=gram[:, :, :2])
    with pytest.raises(ValueError, match="seen_bias"):
        transfer_rows(target, seen_w, seen_b[:2], cfg, gram=gram)
    with pytest.raises(ValueError, match="init_weight"):
        transfer_rows(target, seen_w, seen_b, cfg, gram=gram, init_weight=torch.zeros(3, 3))
