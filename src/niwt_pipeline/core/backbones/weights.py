"""Reading, writing and loading backbone weights; finding a model's final classifier.

Weights are state dicts in ``.safetensors`` files or ``.pt``/``.pth`` files read with
``torch.load(weights_only=True)``: nothing is ever unpickled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from niwt_pipeline.core.errors import InputError, fail, shorten

logger = logging.getLogger(__name__)


def replace_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the qualified ``name`` of ``model`` (in place)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a ``.pt``/``.pth`` file.

    ``.pt``/``.pth`` files are read with ``torch.load(weights_only=True)``; a checkpoint
    dict holding the tensors under ``"state_dict"`` or ``"model"`` is unwrapped, and a
    ``"module."`` prefix (from ``DataParallel``) is stripped.

    Raises:
        InputError: naming the file when it is missing, unreadable or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise fail(path, "weights file not found")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load and safetensors raise many kinds
        raise fail(path, f"not a readable weights file ({exc.__class__.__name__}: {exc})") from exc
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise fail(path, "expected a state dict (a mapping of parameter names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Save ``model.state_dict()`` as ``.safetensors`` or (any other suffix) ``torch.save``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def load_weights(
    model: nn.Module, weights: str | Path, *, adapt_classifier: bool = False
) -> nn.Module:
    """Load a weights file into ``model`` strictly, in place.

    Args:
        model: the module to fill.
        weights: a ``.pt``/``.pth``/``.safetensors`` state-dict file (see :func:`read_state_dict`).
        adapt_classifier: when the file's final classifier has a different number of
            outputs than the model's, first resize the model's classifier to the file's.

    Raises:
        InputError: naming the file and listing the missing, unexpected and
            shape-mismatched keys when the file does not fit the model.
    """
    path = Path(weights)
    state = read_state_dict(path)
    if adapt_classifier:
        clf_name = classifier_name(model)
        clf = get_classifier(model)
        w = state.get(f"{clf_name}.weight")
        fits_input = w is not None and w.ndim == 2 and w.shape[1] == clf.in_features
        if fits_input and w.shape[0] != clf.out_features:
            bias = f"{clf_name}.bias" in state
            replace_submodule(
                model, clf_name, nn.Linear(clf.in_features, int(w.shape[0]), bias=bias)
            )
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {shorten(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {shorten(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {shorten(mismatched, 5)}")
        raise fail(path, f"weights do not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    logger.info("Loaded weights from %s", path)
    return model


def classifier_name(model: nn.Module) -> str:
    """Qualified name of the final ``nn.Linear`` (``"fc"``, ``"classifier.6"``, ``"_fc"``).

    The last ``nn.Linear`` registered in the model; the model's forward must end with it.

    Raises:
        InputError: when the model has no ``nn.Linear``.
    """
    name = None
    for qualname, module in model.named_modules():
        if isinstance(module, nn.Linear):
            name = qualname
    if name is None:
        raise InputError(f"{type(model).__name__} has no nn.Linear classifier")
    return name


def get_classifier(model: nn.Module) -> nn.Linear:
    """The final ``nn.Linear(D, C)`` of the model (the module itself, not a copy)."""
    module = model.get_submodule(classifier_name(model))
    assert isinstance(module, nn.Linear)
    return module
