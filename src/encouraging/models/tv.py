"""torchvision's ResNet-18/50 and EfficientNet-B0, randomly initialised, plus the CIFAR-stem ResNets.

``resnet18`` / ``resnet50`` / ``efficientnet_b0`` are torchvision's ImageNet networks unchanged (the paper trains
ResNet-50 and EfficientNet-B0 from scratch on CIFAR images upsampled to 224 px, paper.md §3). The ``*_cifar``
variants swap the stem for the usual 32-px one: a 3x3 stride-1 convolution and no max-pool, so a 32x32 image
keeps a 4x4 map before global pooling instead of 1x1. ``in_channels != 3`` replaces the first convolution by one
with the same geometry. Weights are never downloaded (``weights=None``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import register_model


def _tv_models():
    try:
        import torchvision.models as tvm
    except ImportError as err:  # pragma: no cover - torchvision is in the experiments extra
        raise ImportError(f"the torchvision models need torchvision (pip install torchvision): {err}") from err
    return tvm


def _init_conv(conv: nn.Conv2d) -> nn.Conv2d:
    # torchvision initialises its ResNet convolutions this way; a replaced stem should not differ.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def _resnet(arch: str, num_classes: int, in_channels: int, cifar_stem: bool, kwargs: dict[str, Any]) -> nn.Module:
    model = getattr(_tv_models(), arch)(weights=None, num_classes=num_classes, **kwargs)
    if cifar_stem:
        model.conv1 = _init_conv(nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False))
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = _init_conv(nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False))
    return model


@register_model(head="fc", in_channels=3, image_size=32, tags=("cifar",))
def resnet18_cifar(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, **kwargs: Any) -> nn.Module:
    """torchvision ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool); 11.2 M parameters."""
    return _resnet("resnet18", num_classes, in_channels, True, kwargs)


@register_model(head="fc", in_channels=3, image_size=32, tags=("cifar",))
def resnet50_cifar(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, **kwargs: Any) -> nn.Module:
    """torchvision ResNet-50 with the CIFAR stem (3x3 stride-1 conv, no max-pool); 23.5 M parameters."""
    return _resnet("resnet50", num_classes, in_channels, True, kwargs)


@register_model(head="fc", in_channels=3, image_size=224, tags=("imagenet", "paper"))
def resnet18(num_classes: int = 10, in_channels: int = 3, image_size: int = 224, **kwargs: Any) -> nn.Module:
    """torchvision ResNet-18 (ImageNet stem: 7x7 stride-2 conv + max-pool), random init."""
    return _resnet("resnet18", num_classes, in_channels, False, kwargs)


@register_model(head="fc", in_channels=3, image_size=224, tags=("imagenet", "paper"))
def resnet50(num_classes: int = 10, in_channels: int = 3, image_size: int = 224, **kwargs: Any) -> nn.Module:
    """torchvision ResNet-50 (ImageNet stem), random init: the paper's 224-px CIFAR and ImageNet recipe."""
    return _resnet("resnet50", num_classes, in_channels, False, kwargs)


@register_model(head="classifier", classifier="classifier.1", in_channels=3, image_size=224, tags=("imagenet", "paper"))
def efficientnet_b0(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 224,
    dropout: float = 0.2,
    drop_connect: float = 0.2,
    **kwargs: Any,
) -> nn.Module:
    """torchvision EfficientNet-B0, random init; dropout 0.2 and drop-connect 0.2 as in the paper's recipe."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if not 0.0 <= drop_connect < 1.0:
        raise ValueError(f"drop_connect must be in [0, 1), got {drop_connect}")
    model = _tv_models().efficientnet_b0(
        weights=None, num_classes=num_classes, dropout=dropout, stochastic_depth_prob=drop_connect, **kwargs
    )
    if in_channels != 3:
        old = model.features[0][0]
        model.features[0][0] = nn.Conv2d(
            in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding, bias=False
        )
        nn.init.kaiming_normal_(model.features[0][0].weight, mode="fan_out")
    return model
