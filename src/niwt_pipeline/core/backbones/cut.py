"""Cutting a backbone at the importance layer into stem, head and classifier.

NIWT needs three pieces of a backbone (Selvaraju et al., ECCV 2018, section 3):

* the **stem** ``x -> A``: the network up to the importance layer ``L``,
  ``A: (B, K, h, w)``;
* the **head** ``A -> z``: the rest of the network up to the classifier's input,
  ``z: (B, D)`` the penultimate features;
* the **classifier** ``z -> logits``: the final ``nn.Linear(D, C)``.

:func:`cut_at_layer` cuts a model into these pieces with ``torch.fx`` (no hooks), so
the importance code can run the stem once without autograd and differentiate only the
head.  The pieces share their modules and parameters with the original model.  The result
is a :class:`CutModel` ("cut", never "split": a split is a partition of the images).
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator

import torch
from torch import fx, nn
from torchvision.models.feature_extraction import (
    DualGraphModule,
    create_feature_extractor,
    get_graph_node_names,
)

from niwt_pipeline.core.backbones.weights import classifier_name, get_classifier
from niwt_pipeline.core.errors import InputError, shorten


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


class CutModel(nn.Module):
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
        f"Valid names include module prefixes such as: {shorten(blocks, 12)} "
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


def cut_at_layer(model: nn.Module, layer: str) -> CutModel:
    """Cut ``model`` at the node ``layer`` into stem, head and classifier, without hooks.

    ``layer`` is a node name as listed by ``get_graph_node_names`` or a module prefix of
    one (``"layer4.0"`` means the last node inside ``layer4.0``, i.e. the block's output),
    as in ``create_feature_extractor``.  The head is the traced graph from that node's
    output to the *input* of the final ``nn.Linear``.

    The caller's model is not modified (its per-module train/eval flags are restored);
    the returned :class:`CutModel` starts in the model's mode and shares its parameters.

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
                    f"the network also uses tensors computed before it ({shorten(leaks, 5)}); "
                    "choose a block output (such as 'layer4.0') rather than a node inside a "
                    "block with a skip connection"
                )
            stem_graph = _subgraph(graph, _ancestors(node_a), node_a)
            head_graph = _subgraph(graph, head_nodes, node_z, replace=node_a)
            graphs[mode] = (stem_graph, head_graph)
        name = type(model).__name__
        stem = DualGraphModule(model, graphs["train"][0], graphs["eval"][0], class_name=name)
        head = DualGraphModule(model, graphs["train"][1], graphs["eval"][1], class_name=name)
    cut = CutModel(stem, head, classifier, layer, clf_name)
    # The stem's and head's own flags follow the model (they pick the train or eval
    # graph); the shared leaf modules keep the flags the caller gave them.
    with preserved_modes(model):
        cut.train(model.training)
    return cut


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


def check_importance_layer(cut: CutModel, example_input: torch.Tensor, *, seed: int = 0) -> None:
    """Refuse an importance layer after which the class scores are linear in ``A``.

    After the last nonlinearity (e.g. ``avgpool``, or ``layer4`` of a ResNet), the
    gradient of a logit w.r.t. ``A`` no longer depends on the image: the importances
    would just be the classifier rows spread over positions.  Checked numerically in
    eval mode: the gradient of a fixed random combination of the logits at ``A`` and at
    ``2 A + noise`` must differ.

    Args:
        cut: from :func:`cut_at_layer`.
        example_input: ``(B, 3, H, W)`` a few real or random images.

    Raises:
        InputError: when the scores are linear in the activations at ``cut.layer``.
    """
    generator = torch.Generator().manual_seed(seed)
    params = list(cut.parameters())
    flags = [p.requires_grad for p in params]
    device = params[0].device if params else torch.device("cpu")
    with preserved_modes(cut):
        cut.eval()
        try:
            for p in params:
                p.requires_grad_(False)
            with torch.no_grad():
                a0 = cut.stem(example_input.to(device)).float()
            noise = torch.randn(a0.shape, generator=generator).to(device) * (a0.std() + 1e-3)
            n_classes = cut.classifier.out_features
            mix = torch.randn((a0.shape[0], n_classes), generator=generator).to(device)
            grads = []
            for point in (a0, 2.0 * a0 + noise):
                a = point.detach().requires_grad_(True)
                with torch.enable_grad():
                    score = (cut.classifier(cut.head(a.clone())) * mix).sum()
                    (grad,) = torch.autograd.grad(score, a)
                grads.append(grad)
        finally:
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)
    scale = grads[0].abs().max().item() + 1e-12
    if torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6 * scale):
        raise InputError(
            f"importance layer {cut.layer!r}: the class scores are linear in its activations "
            "(only pooling and linear layers follow it), so the importances would just be the "
            "classifier rows; choose an earlier layer with at least one nonlinear block after it"
        )
