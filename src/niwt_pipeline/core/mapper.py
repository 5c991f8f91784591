"""Domain knowledge -> neuron importance (the NIWT mapper) and its inverse.

The mapper (Selvaraju et al., ECCV 2018, sec. 3.2, eq. 2) is a linear map with bias from a
class's domain-knowledge vector (attributes, sentence embedding, ...) to the importance of
the layer's channels for that class.  As in the authors' code, it is trained **per image**
on the pairs ``(dk[y_i], alpha_i)`` with a cosine-distance loss and Adam, and a few seen
classes are held out to choose the number of epochs (early stopping).

The inverse map (importance -> domain knowledge) is a closed-form ridge regression;
it turns the importance of a prediction into a textual explanation.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from niwt_pipeline.core.importance import channel_columns

logger = logging.getLogger(__name__)

_EPS = 1e-12


@dataclass
class MapperConfig:
    """Hyper-parameters of :func:`fit_mapper`.

    Attributes:
        lr: Adam learning rate.
        weight_decay: Adam's L2 penalty on the weight and bias.
        max_epochs: upper bound on the epochs (passes over the training images).
        batch_size: images per Adam step.
        patience: stop after this many epochs without a better held-out cosine.
        min_delta: an epoch counts as better when the held-out cosine rises by more than this.
        n_heldout_classes: seen classes held out for early stopping: an ``int`` count, or a
            ``float`` in (0, 1) read as a fraction of the seen classes (at least one);
            0 means no hold-out (train ``max_epochs`` epochs on everything).
        seed: seeds the hold-out choice, the initialisation and the shuffling.
        standardise_inputs: standardise each domain-knowledge dimension with the mean and
            std of the training classes (kept inside the mapper, so ``predict`` applies it).
        refit_all: after early stopping picked the epoch count, train a fresh mapper on all
            seen classes for that many epochs and return it (else return the best
            early-stopped mapper).
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 200
    batch_size: int = 64
    patience: int = 10
    min_delta: float = 0.0
    n_heldout_classes: int | float = 5
    seed: int = 0
    standardise_inputs: bool = False
    refit_all: bool = True

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"MapperConfig.lr: expected > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"MapperConfig.weight_decay: expected >= 0, got {self.weight_decay}")
        if self.max_epochs < 1:
            raise ValueError(f"MapperConfig.max_epochs: expected >= 1, got {self.max_epochs}")
        if self.batch_size < 1:
            raise ValueError(f"MapperConfig.batch_size: expected >= 1, got {self.batch_size}")
        if self.patience < 1:
            raise ValueError(f"MapperConfig.patience: expected >= 1, got {self.patience}")
        n = self.n_heldout_classes
        if isinstance(n, float) and not float(n).is_integer() and not 0.0 < n < 1.0:
            raise ValueError(
                "MapperConfig.n_heldout_classes: expected an int >= 0 or a fraction in (0, 1), "
                f"got {n}"
            )
        if n < 0:
            raise ValueError(f"MapperConfig.n_heldout_classes: expected >= 0, got {n}")


class LinearMapper(nn.Module):
    """``importance = W ((dk - in_mean) / in_scale) + b``.

    Args:
        n_in: A, the domain-knowledge dimension.
        n_out: K, the number of channels at the importance layer.

    The input standardisation (``in_mean``, ``in_scale``, both (A,)) is stored as buffers,
    so ``state_dict`` / ``load_state_dict`` round-trip the whole mapper.  A new mapper is
    all zeros (construction does not touch the global RNG).
    """

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        # no default init: it would draw from the global RNG; fit_mapper sets the values
        self.linear = nn.utils.skip_init(nn.Linear, n_in, n_out)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()
        self.register_buffer("in_mean", torch.zeros(n_in))
        self.register_buffer("in_scale", torch.ones(n_in))

    @property
    def n_in(self) -> int:
        """A, the domain-knowledge dimension the mapper takes."""
        return self.linear.in_features

    @property
    def n_out(self) -> int:
        """K, the number of importance-layer channels the mapper predicts."""
        return self.linear.out_features

    def forward(self, dk: torch.Tensor) -> torch.Tensor:
        """``dk``: (B, A) -> (B, K)."""
        return self.linear((dk - self.in_mean) / self.in_scale)

    @torch.no_grad()
    def predict(self, dk: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Predicted class importance.

        Args:
            dk: (C, A) domain knowledge, one row a class.

        Returns:
            (C, K) float32 predicted importance, detached.

        Raises:
            ValueError: if ``dk`` is not of shape (C, A) with A = :attr:`n_in`.
        """
        x = dk if isinstance(dk, torch.Tensor) else torch.from_numpy(np.array(dk))
        x = x.to(dtype=self.linear.weight.dtype, device=self.linear.weight.device)
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(
                f"LinearMapper.predict: expected dk of shape (C, {self.n_in}), got {tuple(x.shape)}"
            )
        return self(x)

    def state(self) -> dict[str, torch.Tensor]:
        """The state dict as detached CPU tensors (for a safetensors file)."""
        return {k: v.detach().cpu() for k, v in self.state_dict().items()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> LinearMapper:
        """A mapper from :meth:`state` (its sizes read off ``linear.weight``).

        Raises:
            KeyError: when ``linear.weight`` is missing.
            RuntimeError: when the other tensors do not fit (strict loading).
        """
        n_out, n_in = state["linear.weight"].shape
        mapper = cls(int(n_in), int(n_out))
        mapper.load_state_dict({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})
        return mapper


def predicted_importance_table(
    mapper: LinearMapper, dk: np.ndarray, classes: pd.DataFrame
) -> pd.DataFrame:
    """The mapper's predicted importance of every class as a table.

    Args:
        mapper: the fitted mapper.
        dk: (C, A) domain knowledge, row = class id.
        classes: ``class_id``, ``name``, ``seen`` of every class.

    Returns:
        ``class_id``, ``name``, ``seen``, then ``k_0000..`` (float32), one row per class in
        ``class_id`` order.
    """
    predicted = mapper.predict(dk).numpy()
    table = pd.DataFrame(predicted, columns=channel_columns(predicted.shape[1]))
    ordered = classes.sort_values("class_id").reset_index(drop=True)
    table.insert(0, "seen", ordered["seen"].to_numpy())
    table.insert(0, "name", ordered["name"].to_numpy())
    table.insert(0, "class_id", ordered["class_id"].to_numpy().astype("int64"))
    return table


@dataclass
class MapperReport:
    """What :func:`fit_mapper` did.

    Attributes:
        heldout_class_ids: the seen classes held out for early stopping (sorted).
        heldout_cosine: at the best epoch, mean over held-out images of
            cos(predicted importance of the image's class, the image's importance).
        heldout_class_cosine: at the best epoch, mean over held-out classes of
            cos(predicted class importance, mean importance of the class's images).
        epochs_run: epochs of the early-stopping fit.
        best_epoch: 1-based epoch with the best held-out cosine (``max_epochs`` when no hold-out).
        refit_all: whether the returned mapper was refit on all seen classes.
        train_loss: mean training cosine distance per epoch of the early-stopping fit.
        heldout_cosine_history: held-out per-image cosine per epoch.
        n_train_images / n_heldout_images: image counts of the two parts.
    """

    heldout_class_ids: list[int]
    heldout_cosine: float
    heldout_class_cosine: float
    epochs_run: int
    best_epoch: int
    refit_all: bool
    train_loss: list[float] = field(default_factory=list)
    heldout_cosine_history: list[float] = field(default_factory=list)
    n_train_images: int = 0
    n_heldout_images: int = 0

    def as_dict(self) -> dict[str, float | int | bool]:
        """Scalars only, for metric logging."""
        return {
            "heldout_cosine": self.heldout_cosine,
            "heldout_class_cosine": self.heldout_class_cosine,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "refit_all": self.refit_all,
            "n_train_images": self.n_train_images,
            "n_heldout_images": self.n_heldout_images,
        }


def _as_float_tensor(
    x: np.ndarray | torch.Tensor, name: str, ndim: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    t = (
        x.detach().cpu()
        if isinstance(x, torch.Tensor)
        else torch.from_numpy(np.array(x, dtype=np.float64))  # a copy: inputs may be read-only
    )
    t = t.to(dtype)
    if t.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return t


def _as_long_array(x: np.ndarray | torch.Tensor | list[int], name: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError(f"{name}: expected integer class ids")
    return a.astype(np.int64)


def n_heldout(n_seen: int, n_heldout_classes: int | float) -> int:
    """Number of seen classes to hold out: an int count, or a fraction (at least one).

    Raises:
        ValueError: if the count is >= ``n_seen`` (no class would remain for training).
    """
    n = n_heldout_classes
    if isinstance(n, float) and 0.0 < n < 1.0:
        count = max(1, int(round(n * n_seen)))
    else:
        count = int(n)
    if count >= n_seen:
        raise ValueError(
            f"cannot hold out {count} of {n_seen} seen classes: "
            "at least one must remain for training"
        )
    return count


def cosine_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - cos(pred_i, target_i)`` per row; rows (B, K) -> (B,).  Zero rows give distance 1."""
    num = (pred * target).sum(-1)
    den = (pred.norm(dim=-1) * target.norm(dim=-1)).clamp_min(_EPS)
    return 1.0 - num / den


def _init_mapper(
    n_in: int, n_out: int, seed: int, in_mean: torch.Tensor, in_scale: torch.Tensor
) -> LinearMapper:
    """A mapper initialised like ``nn.Linear``, from a private generator (global RNG untouched)."""
    gen = torch.Generator().manual_seed(seed)
    mapper = LinearMapper(n_in, n_out)
    bound = 1.0 / math.sqrt(n_in) if n_in > 0 else 0.0
    with torch.no_grad():
        mapper.linear.weight.copy_(torch.rand(n_out, n_in, generator=gen) * 2 * bound - bound)
        mapper.linear.bias.copy_(torch.rand(n_out, generator=gen) * 2 * bound - bound)
        mapper.in_mean.copy_(in_mean)
        mapper.in_scale.copy_(in_scale)
    return mapper


def _train_epochs(
    mapper: LinearMapper,
    dk: torch.Tensor,
    importance: torch.Tensor,
    labels: torch.Tensor,
    *,
    config: MapperConfig,
    n_epochs: int,
    gen: torch.Generator,
    on_epoch=None,
) -> list[float]:
    """Adam on the per-image cosine distance; ``on_epoch(epoch, mapper) -> bool`` may stop early."""
    opt = torch.optim.Adam(mapper.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = importance.shape[0]
    losses: list[float] = []
    for epoch in range(1, n_epochs + 1):
        mapper.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            pred = mapper(dk[labels[idx]])
            loss = cosine_distance(pred, importance[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        losses.append(total / n)
        if on_epoch is not None and on_epoch(epoch, mapper):
            break
    return losses


@torch.no_grad()
def _heldout_scores(
    mapper: LinearMapper, dk: torch.Tensor, importance: torch.Tensor, labels: torch.Tensor
) -> tuple[float, float]:
    """(mean per-image cosine, mean per-class cosine vs the class-mean importance)."""
    mapper.eval()
    per_image = 1.0 - cosine_distance(mapper(dk[labels]), importance)
    classes = torch.unique(labels)
    means = torch.stack([importance[labels == c].mean(0) for c in classes])
    per_class = 1.0 - cosine_distance(mapper(dk[classes]), means)
    return float(per_image.mean()), float(per_class.mean())


def fit_mapper(
    dk: np.ndarray | torch.Tensor,
    importance: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    seen_class_ids: np.ndarray | torch.Tensor | list[int],
    config: MapperConfig | None = None,
) -> tuple[LinearMapper, MapperReport]:
    """Fit the linear domain-knowledge -> importance mapper, per image, with early stopping.

    Args:
        dk: (C, A) float class domain knowledge; row ``c`` belongs to class id ``c``.
        importance: (N, K) float per-image importance of the image's ground-truth class.
        labels: (N,) int class id of each image; all must be in ``seen_class_ids``.
        seen_class_ids: ids of the seen classes (rows of ``dk`` the mapper may train on).
        config: hyper-parameters; defaults to ``MapperConfig()``.

    Returns:
        The fitted :class:`LinearMapper` (float32, eval mode) and a :class:`MapperReport`.
        Deterministic for ``config.seed``; the global RNG is not used.

    Raises:
        ValueError: if ``dk`` or ``importance`` is not a finite 2-D array, ``labels`` or
            ``seen_class_ids`` is not 1-D integer, ``importance`` and ``labels`` differ in
            length or are empty, ``seen_class_ids`` does not index rows of ``dk``, a label
            is not a seen class, or the hold-out would leave no class to train on.
    """
    config = config or MapperConfig()
    dk_t = _as_float_tensor(dk, "dk", 2)
    imp = _as_float_tensor(importance, "importance", 2)
    lab = _as_long_array(labels, "labels")
    seen = np.unique(_as_long_array(seen_class_ids, "seen_class_ids"))
    if imp.shape[0] != lab.shape[0]:
        raise ValueError(f"importance has {imp.shape[0]} rows but labels has {lab.shape[0]}")
    if imp.shape[0] == 0:
        raise ValueError("fit_mapper: no images")
    if seen.size and (seen.min() < 0 or seen.max() >= dk_t.shape[0]):
        raise ValueError(
            f"seen_class_ids must index the {dk_t.shape[0]} rows of dk, "
            f"got range {seen.min()}..{seen.max()}"
        )
    outside = np.setdiff1d(np.unique(lab), seen)
    if outside.size:
        raise ValueError(
            f"labels contain classes that are not in seen_class_ids: {outside[:10].tolist()}"
        )
    present = np.unique(lab)

    rng = np.random.default_rng(config.seed)
    n_hold = n_heldout(present.size, config.n_heldout_classes) if config.n_heldout_classes else 0
    held = (
        np.sort(rng.choice(present, size=n_hold, replace=False))
        if n_hold
        else np.array([], dtype=np.int64)
    )
    is_held = np.isin(lab, held)
    train_classes = np.setdiff1d(present, held)

    def scaling(classes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        a = dk_t.shape[1]
        if not config.standardise_inputs:
            return torch.zeros(a), torch.ones(a)
        rows = dk_t[torch.from_numpy(classes)]
        std = rows.std(0, unbiased=False)
        return rows.mean(0), torch.where(std > 0, std, torch.ones_like(std))

    lab_t = torch.from_numpy(lab)
    tr = torch.from_numpy(~is_held)
    ho = torch.from_numpy(is_held)
    gen = torch.Generator().manual_seed(config.seed)
    mean, scale = scaling(train_classes)
    mapper = _init_mapper(dk_t.shape[1], imp.shape[1], config.seed, mean, scale)

    history: list[float] = []
    best = {
        "cos": -math.inf,
        "cls": math.nan,
        "epoch": config.max_epochs,
        "state": None,
        "since": 0,
    }

    def on_epoch(epoch: int, m: LinearMapper) -> bool:
        cos, cls = _heldout_scores(m, dk_t, imp[ho], lab_t[ho])
        history.append(cos)
        if cos > best["cos"] + config.min_delta or best["state"] is None:
            best.update(cos=cos, cls=cls, epoch=epoch, state=copy.deepcopy(m.state_dict()), since=0)
        else:
            best["since"] += 1
        logger.debug(
            "mapper epoch %d: held-out cosine %.4f (best %.4f at %d)",
            epoch,
            cos,
            best["cos"],
            best["epoch"],
        )
        return best["since"] >= config.patience

    losses = _train_epochs(
        mapper,
        dk_t,
        imp[tr],
        lab_t[tr],
        config=config,
        n_epochs=config.max_epochs,
        gen=gen,
        on_epoch=on_epoch if n_hold else None,
    )
    epochs_run = len(losses)
    if n_hold:
        mapper.load_state_dict(best["state"])
        heldout_cos, heldout_cls = float(best["cos"]), float(best["cls"])
        best_epoch = int(best["epoch"])
    else:
        heldout_cos = heldout_cls = math.nan
        best_epoch = epochs_run

    refit = bool(config.refit_all and n_hold)
    if refit:
        mean, scale = scaling(present)
        mapper = _init_mapper(dk_t.shape[1], imp.shape[1], config.seed, mean, scale)
        gen = torch.Generator().manual_seed(config.seed)
        _train_epochs(mapper, dk_t, imp, lab_t, config=config, n_epochs=best_epoch, gen=gen)
    mapper.eval()

    report = MapperReport(
        heldout_class_ids=[int(c) for c in held],
        heldout_cosine=heldout_cos,
        heldout_class_cosine=heldout_cls,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        refit_all=refit,
        train_loss=losses,
        heldout_cosine_history=history,
        n_train_images=int((~is_held).sum()),
        n_heldout_images=int(is_held.sum()),
    )
    logger.info(
        "mapper: %d epochs (best %d), held-out cosine %.4f per image / %.4f per class, "
        "refit on all: %s",
        epochs_run,
        best_epoch,
        heldout_cos,
        heldout_cls,
        refit,
    )
    return mapper, report


@dataclass
class InverseMap:
    """Closed-form ridge map importance (K,) -> domain knowledge (A,).

    ``predict(x) = ((normalise(x) - x_mean) / x_scale) @ weight + bias`` where
    ``normalise`` L2-normalises each row when ``l2_normalise`` is set.

    Attributes:
        x_mean, x_scale: (K,) input standardisation.
        weight: (K, A); bias: (A,) (the training mean of the targets).
        l2_normalise: whether inputs are L2-normalised per row first.
    """

    x_mean: torch.Tensor
    x_scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    l2_normalise: bool = True

    @torch.no_grad()
    def predict(self, importance: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``importance``: (N, K) -> (N, A) predicted domain knowledge (float64).

        A single (K,) row is read as (1, K).

        Raises:
            ValueError: if ``importance`` is not (N, K) with K the map's input width.
        """
        x = torch.as_tensor(
            np.asarray(importance) if not isinstance(importance, torch.Tensor) else importance
        )
        x = x.detach().to(torch.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.weight.shape[0]:
            raise ValueError(
                f"InverseMap.predict: expected (N, {self.weight.shape[0]}), got {tuple(x.shape)}"
            )
        if self.l2_normalise:
            x = x / x.norm(dim=1, keepdim=True).clamp_min(_EPS)
        return ((x - self.x_mean) / self.x_scale) @ self.weight + self.bias

    def state(self) -> dict[str, torch.Tensor]:
        """Plain tensors, for safetensors / ``torch.save``."""
        return {
            "x_mean": self.x_mean.clone(),
            "x_scale": self.x_scale.clone(),
            "weight": self.weight.clone(),
            "bias": self.bias.clone(),
            "l2_normalise": torch.tensor(1.0 if self.l2_normalise else 0.0, dtype=torch.float64),
        }

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> InverseMap:
        """Inverse of :meth:`state`."""
        return cls(
            x_mean=state["x_mean"].to(torch.float64),
            x_scale=state["x_scale"].to(torch.float64),
            weight=state["weight"].to(torch.float64),
            bias=state["bias"].to(torch.float64),
            l2_normalise=bool(float(state["l2_normalise"]) != 0.0),
        )


def ridge_solve(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """``argmin_B ||x B - y||^2 + alpha ||B||^2`` for centred ``x`` (N, P) and ``y`` (N, Q).

    Uses the primal ``(x^T x + alpha I)^-1 x^T y`` when P <= N, else the dual
    ``x^T (x x^T + alpha I)^-1 y`` (identical for alpha > 0).  Returns (P, Q).
    """
    n, p = x.shape
    if p <= n:
        gram = x.T @ x + alpha * torch.eye(p, dtype=x.dtype)
        return (
            torch.linalg.solve(gram, x.T @ y)
            if alpha > 0
            else torch.linalg.lstsq(gram, x.T @ y).solution
        )
    gram = x @ x.T + alpha * torch.eye(n, dtype=x.dtype)
    if alpha > 0:
        return x.T @ torch.linalg.solve(gram, y)
    return torch.linalg.pinv(x) @ y


def fit_inverse_map(
    importance: np.ndarray | torch.Tensor,
    dk_targets: np.ndarray | torch.Tensor,
    ridge_alpha: float = 1.0,
    *,
    l2_normalise: bool = True,
) -> InverseMap:
    """Ridge regression importance -> domain knowledge, in closed form (float64).

    Inputs are (optionally) L2-normalised per row, then standardised per channel
    (zero-variance channels keep scale 1); targets are centred; the intercept is not
    penalised.

    Args:
        importance: (N, K) per-image importance.
        dk_targets: (N, A) domain knowledge to predict, e.g. ``dk[labels]``.
        ridge_alpha: >= 0 ridge penalty on the standardised inputs.
        l2_normalise: L2-normalise each importance row first (importance scale varies by image).

    Returns:
        The fitted :class:`InverseMap` (float64 tensors).

    Raises:
        ValueError: if ``ridge_alpha`` < 0, an input is not a finite 2-D array, or the two
            inputs differ in row count.
    """
    if ridge_alpha < 0:
        raise ValueError(f"ridge_alpha: expected >= 0, got {ridge_alpha}")
    x = _as_float_tensor(importance, "importance", 2, torch.float64)
    y = _as_float_tensor(dk_targets, "dk_targets", 2, torch.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"importance has {x.shape[0]} rows but dk_targets has {y.shape[0]}")
    if l2_normalise:
        x = x / x.norm(dim=1, keepdim=True).clamp_min(_EPS)
    x_mean = x.mean(0)
    std = x.std(0, unbiased=False)
    x_scale = torch.where(std > 0, std, torch.ones_like(std))
    y_mean = y.mean(0)
    weight = ridge_solve((x - x_mean) / x_scale, y - y_mean, float(ridge_alpha))
    return InverseMap(
        x_mean=x_mean, x_scale=x_scale, weight=weight, bias=y_mean, l2_normalise=l2_normalise
    )
