"""Neuron importances ("alphas") at the importance layer, batched and streamed.

For an image ``x`` with activations ``A = stem(x): (K, h, w)`` at the importance layer,
logits ``y = classifier(head(A))`` and a target class ``c``, the importance of channel
``k`` is the gradient of the *logit* ``y_c`` w.r.t. ``A_k``, **summed** over the spatial
positions (Selvaraju et al., "Choose Your Neuron", ECCV 2018, eq. 1; the sum, rather than
Grad-CAM's mean, is what the authors' code computes)::

    alpha_k = sum_{u, v} d y_c / d A_{k, u, v}

Grad-CAM libraries take the mean instead, which is this divided by ``h * w``.

Because each image's logits depend only on its own activations, the gradient of
``sum_i y_{i, c_i}`` w.r.t. the batch's ``A`` holds every image's gradient: one backward
pass through the head gives the importances of a whole batch with a different target
class per image.  The stem runs without autograd, and the parameters never receive a
gradient (their ``requires_grad`` is switched off during extraction and restored).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from niwt_pipeline.core.backbones.cut import CutModel, preserved_modes
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.training import resolve_device

logger = logging.getLogger(__name__)

Targets = Literal["gt", "pred", "gt_and_pred"]
_TARGETS = ("gt", "pred", "gt_and_pred")


@dataclass
class ExtractionResult:
    """What :func:`extract` returns; row ``r`` is the ``r``-th image the loader yielded.

    Attributes:
        importance_gt: ``(N, K)`` float32, importances for each image's ground-truth class;
            a row of NaN where the label is not a class of the model (``label < 0`` or
            ``label >= C``, e.g. unseen-class test images).  ``None`` for ``targets="pred"``.
        importance_pred: ``(N, K)`` float32, importances for the predicted class.
            ``None`` for ``targets="gt"``.
        features: ``(N, D)`` float32, penultimate features z (the classifier's input).
        logits: ``(N, C)`` float32.
        predicted: ``(N,)`` int64, ``logits.argmax(1)``.
        labels: ``(N,)`` int64, the labels as given by the loader.
        indices: ``(N,)`` int64, the dataset index of each row (from the loader's third
            item, or ``0..N-1`` for loaders yielding ``(x, y)``).
    """

    importance_gt: np.ndarray | None
    importance_pred: np.ndarray | None
    features: np.ndarray
    logits: np.ndarray
    predicted: np.ndarray
    labels: np.ndarray
    indices: np.ndarray


def _unpack(batch: object, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, labels, indices)`` from a loader batch ``(x, y, idx)`` or ``(x, y)``."""
    if not isinstance(batch, (list, tuple)) or len(batch) not in (2, 3):
        raise InputError("the loader must yield (images, labels) or (images, labels, indices)")
    x, labels = batch[0], torch.as_tensor(batch[1]).long().view(-1)
    if len(batch) == 3:
        indices = torch.as_tensor(batch[2]).long().view(-1)
    else:
        indices = torch.arange(start, start + len(labels))
    if x.shape[0] != len(labels) or len(indices) != len(labels):
        raise InputError(
            f"batch sizes differ: {x.shape[0]} images, {len(labels)} labels, {len(indices)} indices"
        )
    return x, labels, indices


def _dataset_length(loader: Iterable) -> int | None:
    try:
        return len(loader.dataset)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return None


class _FrozenForExtraction:
    """Eval mode and ``requires_grad=False`` on every parameter; both restored on exit.

    Owns the caller's flags for the duration of a ``with`` block, so nothing leaks on error.
    """

    def __init__(self, cut: CutModel) -> None:
        self.cut = cut
        self._modes = preserved_modes(cut)
        self._params = list(cut.parameters())
        self._flags: list[bool] = []

    def __enter__(self) -> _FrozenForExtraction:
        self._modes.__enter__()
        self.cut.eval()
        self._flags = [p.requires_grad for p in self._params]
        for p in self._params:
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc: object) -> None:
        for p, flag in zip(self._params, self._flags, strict=True):
            p.requires_grad_(flag)
        self._modes.__exit__(None, None, None)


def _model_device(cut: CutModel) -> torch.device:
    for p in cut.parameters():
        return p.device
    return torch.device("cpu")


def extract(
    cut: CutModel,
    loader: Iterable,
    *,
    device: str | torch.device | None = None,
    targets: Targets = "gt_and_pred",
    progress: bool = True,
) -> ExtractionResult:
    """Importances, penultimate features and logits for every image of a loader.

    Batches are streamed; the outputs are preallocated from ``len(loader.dataset)`` when
    the loader has one, so memory beyond the outputs does not grow with the dataset.

    Args:
        cut: from :func:`~niwt_pipeline.core.backbones.cut.cut_at_layer`.  Run in eval
            mode; the caller's per-module modes and parameters' ``requires_grad`` flags are
            restored afterwards and no parameter ``.grad`` is touched.
        loader: yields ``(images (B, 3, H, W), labels (B,), indices (B,))`` or
            ``(images, labels)``.
        device: where to compute (``"cpu"``, ``"cuda"``, ``"auto"``); ``None`` uses the
            device of the model's parameters.  The model is moved there in place (as
            ``nn.Module.to`` does) when it is elsewhere.
        targets: ``"gt"`` (ground-truth class only), ``"pred"`` (predicted class only) or
            ``"gt_and_pred"``.  Labels outside ``[0, C)`` get NaN ``importance_gt`` rows.
        progress: show a tqdm bar.

    Returns:
        An :class:`ExtractionResult` with N rows in loader order.

    Raises:
        InputError: if ``targets`` is not ``"gt"``, ``"pred"`` or ``"gt_and_pred"``,
            ``device`` is unknown or unavailable, a batch is not ``(images, labels[,
            indices])`` with matching sizes, the loader yields more images than
            ``len(loader.dataset)``, or it yields no images.
    """
    if targets not in _TARGETS:
        raise InputError(f"targets must be one of {', '.join(_TARGETS)}, got {targets!r}")
    dev = _model_device(cut) if device is None else resolve_device(device)
    if _model_device(cut) != dev:
        logger.info("Moving the model to %s for extraction", dev)
        cut.to(dev)
    want_gt = targets in ("gt", "gt_and_pred")
    want_pred = targets in ("pred", "gt_and_pred")
    n_classes = cut.classifier.out_features
    total = _dataset_length(loader)

    out: dict[str, np.ndarray] = {}
    chunks: dict[str, list[np.ndarray]] = {}
    row = 0

    def store(name: str, value: np.ndarray) -> None:
        if total is None:
            chunks.setdefault(name, []).append(value)
            return
        if name not in out:
            out[name] = np.empty((total, *value.shape[1:]), dtype=value.dtype)
        if row + len(value) > total:
            raise InputError(f"the loader yielded more than len(loader.dataset) = {total} images")
        out[name][row : row + len(value)] = value

    start = time.perf_counter()
    with _FrozenForExtraction(cut):
        bar = tqdm(loader, desc="importances", unit="batch", disable=not progress, leave=False)
        for batch in bar:
            x, labels, indices = _unpack(batch, row)
            x = x.to(dev, non_blocking=True)
            labels_dev = labels.to(dev)
            valid = (labels_dev >= 0) & (labels_dev < n_classes)
            gt = torch.where(valid, labels_dev, torch.zeros_like(labels_dev))
            # Skip the ground-truth gradients of a batch without any label of the model's
            # classes (e.g. unseen-class test images) when the predicted ones give K.
            skip_gt = want_pred and not bool(valid.any())
            alpha_gt, alpha_pred, z, logits = batch_importances(
                cut, x, gt if want_gt and not skip_gt else None, pred=want_pred
            )
            if want_gt:
                if alpha_gt is None:
                    alpha_gt = torch.full_like(alpha_pred, float("nan"))
                alpha_gt = alpha_gt.float()
                alpha_gt[~valid] = float("nan")
                store("importance_gt", alpha_gt.cpu().numpy())
            if alpha_pred is not None:
                store("importance_pred", alpha_pred.float().cpu().numpy())
            pred = logits.argmax(1)
            store("features", z.float().cpu().numpy())
            store("logits", logits.float().cpu().numpy())
            store("predicted", pred.cpu().numpy().astype(np.int64))
            store("labels", labels.numpy().astype(np.int64))
            store("indices", indices.numpy().astype(np.int64))
            row += len(labels)
        bar.close()

    if total is None:
        out = {k: np.concatenate(v) for k, v in chunks.items()}
    elif row != total:
        out = {k: v[:row] for k, v in out.items()}
        logger.warning("the loader yielded %d images, len(loader.dataset) is %d", row, total)
    if row == 0:
        raise InputError("the loader yielded no images")
    elapsed = time.perf_counter() - start
    logger.info(
        "Extracted importances of %d images in %.1fs (%.1f images/s)", row, elapsed, row / elapsed
    )
    return ExtractionResult(
        importance_gt=out.get("importance_gt"),
        importance_pred=out.get("importance_pred"),
        features=out["features"],
        logits=out["logits"],
        predicted=out["predicted"],
        labels=out["labels"],
        indices=out["indices"],
    )


def batch_importances(
    cut: CutModel, x: torch.Tensor, gt: torch.Tensor | None, *, pred: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Importances of one batch: one forward pass, one gradient call per target set.

    Expects the cut in eval mode with parameters not requiring grad (as inside
    :func:`extract`, which does that bookkeeping); no parameter gradient is computed.

    Args:
        cut: the cut model.
        x: ``(B, 3, H, W)`` images on the model's device.
        gt: ``(B,)`` int64 target classes in ``[0, C)``, or ``None`` to skip.
        pred: also compute the importances for the predicted classes.

    Returns:
        ``(alpha_gt, alpha_pred, z, logits)``: ``(B, K)`` gradients of the target logits
        w.r.t. the activations summed over the spatial dimensions (``None`` where not
        asked for), ``z: (B, D)`` and ``logits: (B, C)``; all detached.
    """
    with torch.no_grad():
        activations = cut.stem(x)
    a = activations.detach().requires_grad_(True)
    with torch.enable_grad():
        # The head gets a non-leaf copy: an in-place first op (VGG's ReLU after conv5_3)
        # must not modify the leaf the gradient is taken for.
        z = cut.head(a.clone())
        logits = cut.classifier(z)
        wanted = [] if gt is None else [gt]
        if pred:
            wanted.append(logits.detach().argmax(1))
        alphas: list[torch.Tensor] = []
        for i, targets in enumerate(wanted):
            # Each image's logit depends only on its own activations, so the gradient of
            # the sum over the batch holds every image's own gradient.
            score = logits.gather(1, targets.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, a, retain_graph=i < len(wanted) - 1)
            alphas.append(grad.flatten(2).sum(2) if grad.ndim > 2 else grad)
    alpha_gt = alphas.pop(0) if gt is not None else None
    alpha_pred = alphas.pop(0) if pred else None
    return alpha_gt, alpha_pred, z.detach(), logits.detach()


def _timed_batches(loader: Iterable, device: torch.device, max_batches: int | None) -> Iterator:
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            return
        x, labels, _ = _unpack(batch, 0)
        yield x.to(device), labels.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_throughput(
    cut: CutModel,
    loader: Iterable,
    device: str | torch.device | None = None,
    *,
    max_batches: int | None = None,
) -> float:
    """Images per second of a plain eval-mode forward pass (``torch.no_grad``), for benchmarks."""
    dev = _model_device(cut) if device is None else resolve_device(device)
    cut.to(dev)
    n, elapsed = 0, 0.0
    with _FrozenForExtraction(cut), torch.no_grad():
        for x, _ in _timed_batches(loader, dev, max_batches):
            _sync(dev)
            t0 = time.perf_counter()
            cut(x)
            _sync(dev)
            elapsed += time.perf_counter() - t0
            n += x.shape[0]
    return n / max(elapsed, 1e-12)


def extraction_throughput(
    cut: CutModel,
    loader: Iterable,
    device: str | torch.device | None = None,
    *,
    targets: Targets = "gt_and_pred",
    max_batches: int | None = None,
) -> float:
    """Images per second of the importance extraction (forward + gradients), for benchmarks.

    Times the same per-batch work as :func:`extract`, without data loading and copies.

    Raises:
        InputError: if ``targets`` is not ``"gt"``, ``"pred"`` or ``"gt_and_pred"``,
            ``device`` is unknown or unavailable, or a batch is malformed.
    """
    if targets not in _TARGETS:
        raise InputError(f"targets must be one of {', '.join(_TARGETS)}, got {targets!r}")
    dev = _model_device(cut) if device is None else resolve_device(device)
    cut.to(dev)
    n_classes = cut.classifier.out_features
    n, elapsed = 0, 0.0
    with _FrozenForExtraction(cut):
        for x, labels in _timed_batches(loader, dev, max_batches):
            gt = labels.clamp(0, n_classes - 1)
            _sync(dev)
            t0 = time.perf_counter()
            batch_importances(cut, x, None if targets == "pred" else gt, pred=targets != "gt")
            _sync(dev)
            elapsed += time.perf_counter() - t0
            n += x.shape[0]
    return n / max(elapsed, 1e-12)


def channel_columns(k: int) -> list[str]:
    """Column names of the K importance channels: ``k_0000``, ``k_0001``, ..."""
    return [f"k_{i:04d}" for i in range(k)]


def importance_columns(table: pd.DataFrame) -> list[str]:
    """The importance channel columns (``k_....``) of a table, in order."""
    return [c for c in table.columns if c.startswith("k_")]


def importance_tables(
    outputs: dict[str, torch.Tensor], images: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The importance matrix per image (seen trainval images) and per class (their mean).

    Args:
        outputs: the extraction's ``image_id`` (N,) and ``importance_gt`` (N, K).
        images: the canonical images table (``image_id``, ``class_id``, ``split``).

    Returns:
        ``image_importance``: ``image_id``, ``class_id``, then ``k_0000..`` (float32), one
        row per trainval image with a finite importance; ``class_importance``:
        ``class_id``, ``n_images``, then the mean over the class's images.

    Raises:
        KeyError: when an output image is not in ``images``.
    """
    ids = outputs["image_id"].numpy()
    importance = outputs["importance_gt"].numpy()
    table = images.set_index("image_id").loc[ids]
    keep = (table["split"].to_numpy() == "trainval") & ~np.isnan(importance).any(axis=1)
    columns = channel_columns(importance.shape[1])
    per_image = pd.DataFrame(importance[keep], columns=columns)
    per_image.insert(0, "class_id", table["class_id"].to_numpy()[keep].astype("int64"))
    per_image.insert(0, "image_id", ids[keep].astype("int64"))
    per_class = per_image.drop(columns="image_id").groupby("class_id").mean()
    per_class.insert(0, "n_images", per_image.groupby("class_id").size())
    logger.info(
        "importance matrix: %d seen images x %d channels, %d classes",
        len(per_image),
        importance.shape[1],
        len(per_class),
    )
    return per_image, per_class.reset_index()
