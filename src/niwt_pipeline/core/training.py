"""Training a backbone on the seen classes, and measuring its accuracy."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from niwt_pipeline.core.backbones import get_classifier, preserved_modes
from niwt_pipeline.core.errors import InputError

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` -> CUDA when available, else CPU; otherwise ``torch.device(device)``.

    Raises:
        InputError: a bad name, or CUDA requested where it is not available.
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(
            f"device must be 'cpu', 'cuda', 'cuda:<n>' or 'auto', got {device!r}"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return resolved


@dataclass
class TrainConfig:
    """How :func:`train_classifier` trains.

    Attributes:
        epochs: passes over the training loader.
        lr: learning rate.
        weight_decay: L2 penalty (Adam's coupled form / SGD's).
        batch_size: for callers building the loaders (not used by the loop itself).
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``, Nesterov off).
        momentum: SGD momentum.
        lr_schedule: ``"constant"`` or ``"cosine"`` (per epoch, down to 0).
        label_smoothing: of the cross-entropy loss.
        freeze_backbone: train only the final classifier; the rest keeps its weights and
            BatchNorm statistics (it runs in eval mode).
        keep_best: with a validation loader, end with the weights of the epoch with the
            best validation accuracy.
        seed: seeds the global torch RNG (inside a forked RNG state) and the training
            loader's generator, so a run on the CPU is reproducible.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        channels_last: train in the channels-last memory layout (the same model and
            optimisation; about 1.3x faster for convolutions on a CPU, float results
            differ in the last bits); the parameters are back in the default layout after.
    """

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9
    lr_schedule: Literal["constant", "cosine"] = "constant"
    label_smoothing: float = 0.0
    freeze_backbone: bool = False
    keep_best: bool = True
    seed: int = 0
    device: str = "auto"
    channels_last: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in ("adam", "sgd"):
            problems.append(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            problems.append(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if problems:
            raise InputError("TrainConfig: " + "; ".join(problems))


@dataclass
class TrainResult:
    """What :func:`train_classifier` returns.

    Attributes:
        history: one dict per epoch: ``epoch`` (1-based), ``train_loss``, ``train_acc``,
            ``val_acc`` (``None`` without a validation loader), ``lr``, ``seconds``.
        best_epoch: the epoch with the best validation accuracy (the last epoch without
            a validation loader).
        best_val_acc: its validation accuracy, or ``None``.
        config: the configuration as a dict.
    """

    history: list[dict[str, float | int | None]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float | None = None
    config: dict[str, object] = field(default_factory=dict)


def _batches(
    loader: Iterable, device: torch.device, channels_last: bool = False
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for batch in loader:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise InputError("the loader must yield (images, labels[, indices])")
        x, y = batch[0], torch.as_tensor(batch[1]).long()
        x = x.to(device, non_blocking=True)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, y.to(device, non_blocking=True)


def _check_labels(y: torch.Tensor, n_classes: int) -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise InputError(
            f"labels must be class indices in [0, {n_classes}) for this model, got values "
            f"{int(y.min())}..{int(y.max())}"
        )


def train_classifier(
    model: nn.Module,
    train_loader: Iterable,
    config: TrainConfig,
    val_loader: Iterable | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place with cross-entropy on ``(images, labels[, indices])`` batches.

    Args:
        model: a classifier whose final ``nn.Linear`` has C outputs; labels must be in
            ``[0, C)``.  It is moved to the configured device.
        train_loader: training batches; when it has a ``generator`` (as from
            :func:`~niwt_pipeline.core.imageset.make_loader`) it is re-seeded with
            ``config.seed``.
        config: hyper-parameters.
        val_loader: optional validation batches, evaluated after every epoch.
        progress: show a tqdm bar per epoch.

    Returns:
        A :class:`TrainResult`; the model keeps its train/eval flags as they were.

    Raises:
        InputError: if ``config.device`` is unknown or unavailable, a batch is not
            ``(images, labels[, indices])``, a label is outside ``[0, C)``, or the training
            (or validation) loader yields no images.
    """
    device = resolve_device(config.device)
    model.to(device)
    classifier = get_classifier(model)
    n_classes = classifier.out_features
    trainable = (
        list(classifier.parameters())
        if config.freeze_backbone
        else [p for p in model.parameters() if p.requires_grad]
    )
    frozen_flags = [(p, p.requires_grad) for p in model.parameters()]
    if config.freeze_backbone:
        keep = {id(p) for p in trainable}
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
    if config.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            trainable, lr=config.lr, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(
            trainable, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
        if config.lr_schedule == "cosine"
        else None
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    generator = getattr(train_loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(config.seed)

    result = TrainResult(config=asdict(config))
    best_state: dict[str, torch.Tensor] | None = None
    best_score = -1.0
    devices = [device] if device.type == "cuda" else []
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        with preserved_modes(model), torch.random.fork_rng(devices=devices):
            torch.manual_seed(config.seed)
            for epoch in range(1, config.epochs + 1):
                t0 = time.perf_counter()
                if config.freeze_backbone:
                    model.eval()
                    classifier.train()
                else:
                    model.train()
                lr = optimizer.param_groups[0]["lr"]
                loss_sum, correct, seen = 0.0, 0, 0
                bar = tqdm(
                    _batches(train_loader, device, config.channels_last),
                    desc=f"epoch {epoch}/{config.epochs}",
                    unit="batch",
                    disable=not progress,
                    leave=False,
                )
                for x, y in bar:
                    _check_labels(y, n_classes)
                    optimizer.zero_grad(set_to_none=True)
                    logits = model(x)
                    loss = loss_fn(logits, y)
                    loss.backward()
                    optimizer.step()
                    loss_sum += float(loss.detach()) * len(y)
                    correct += int((logits.detach().argmax(1) == y).sum())
                    seen += len(y)
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
                bar.close()
                if seen == 0:
                    raise InputError("the training loader yielded no images")
                if scheduler is not None:
                    scheduler.step()
                val_acc = None
                if val_loader is not None:
                    val_acc, _ = evaluate(model, val_loader, device)
                row = {
                    "epoch": epoch,
                    "train_loss": loss_sum / seen,
                    "train_acc": correct / seen,
                    "val_acc": val_acc,
                    "lr": lr,
                    "seconds": time.perf_counter() - t0,
                }
                result.history.append(row)
                logger.info(
                    "epoch %d/%d: loss %.4f, train acc %.3f%s (%.1fs)",
                    epoch,
                    config.epochs,
                    row["train_loss"],
                    row["train_acc"],
                    "" if val_acc is None else f", val acc {val_acc:.3f}",
                    row["seconds"],
                )
                score = val_acc if val_acc is not None else float(epoch)
                if score > best_score:
                    best_score = score
                    result.best_epoch = epoch
                    result.best_val_acc = val_acc
                    if val_acc is not None and config.keep_best:
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if best_state is not None and result.best_epoch != config.epochs:
                model.load_state_dict(best_state)
                logger.info("Restored the weights of epoch %d", result.best_epoch)
    finally:
        for p, flag in frozen_flags:
            p.requires_grad_(flag)
        if config.channels_last:
            model.to(memory_format=torch.contiguous_format)
    return result


def evaluate(
    model: nn.Module, loader: Iterable, device: str | torch.device | None = None
) -> tuple[float, np.ndarray]:
    """Top-1 accuracy of ``model`` on ``(images, labels[, indices])`` batches.

    Args:
        model: a classifier with C outputs; run in eval mode, its modes restored after.
        loader: batches with labels in ``[0, C)``.
        device: ``None`` uses the device of the model's parameters.

    Returns:
        ``(accuracy, per_class)``: the fraction of images classified correctly, and a
        ``(C,)`` float64 array of per-class accuracies (NaN for classes without images;
        ``np.nanmean(per_class)`` is the per-class mean accuracy).

    Raises:
        InputError: if ``device`` is unknown or unavailable, a batch is not
            ``(images, labels[, indices])``, a label is outside ``[0, C)``, or the loader
            yields no images.
    """
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = resolve_device(device)
    model.to(device)
    n_classes = get_classifier(model).out_features
    hits = torch.zeros(n_classes, dtype=torch.long)
    counts = torch.zeros(n_classes, dtype=torch.long)
    with preserved_modes(model), torch.no_grad():
        model.eval()
        for x, y in _batches(loader, device):
            _check_labels(y, n_classes)
            correct = (model(x).argmax(1) == y).double().cpu()
            labels = y.cpu()
            counts += torch.bincount(labels, minlength=n_classes)
            hits += torch.bincount(labels, weights=correct, minlength=n_classes).long()
    total = int(counts.sum())
    if total == 0:
        raise InputError("the evaluation loader yielded no images")
    per_class = np.full(n_classes, np.nan)
    present = counts > 0
    per_class[present.numpy()] = (hits[present].double() / counts[present].double()).numpy()
    return int(hits.sum()) / total, per_class
