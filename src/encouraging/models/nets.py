"""This package's own networks: the paper's two MNIST CNNs, an MLP, a small CPU-friendly CNN, and the CIFAR ResNet-32
of the long-tailed literature (with the cosine classifier LDAM uses).

Each is a :class:`ClassifierNet`: ``forward_features(x)`` returns the penultimate features ``(N, D)`` and the
final ``nn.Linear`` is the attribute ``classifier`` (``classifier_layer()`` returns it), so
:mod:`encouraging.models.heads` needs no guessing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_model


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


class ClassifierNet(nn.Module):
    """Base class: ``forward(x) = classifier(forward_features(x))`` with ``classifier`` an ``nn.Linear``."""

    head_path = "classifier"
    classifier_path = "classifier"
    classifier: nn.Linear

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.forward_features(x))

    def classifier_layer(self) -> nn.Linear:
        """The final linear layer (logits = ``classifier(features)``)."""
        return self.classifier


class _FixedInput(ClassifierNet):
    """A network with a flatten before a linear layer: it accepts exactly one input size."""

    in_channels: int
    image_size: tuple[int, int]

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"{type(self).__name__} was built for (N, {self.in_channels}, {self.image_size[0]}, "
                f"{self.image_size[1]}) inputs, got {tuple(x.shape)}; pass image_size/in_channels to create_model"
            )


# --------------------------------------------------------------------------------------- torchattacks CNN


class TorchattacksCNN(_FixedInput):
    """The CNN of the paper's adversarial-robustness experiment (the torchattacks demo network).

    Conv(16, 5x5) - ReLU - Conv(32, 5x5) - ReLU - MaxPool 2 - Conv(64, 5x5) - ReLU - MaxPool 2 - flatten -
    Linear(576, 100) - ReLU - Linear(100, C), convolutions unpadded, PyTorch default initialisation, inputs in
    ``[0, 1]`` without normalisation in the paper's recipe. On 28x28 inputs: 28 -> 24 -> 20 -> 10 -> 6 -> 3, so
    the flatten has 64 * 3 * 3 = 576 features. Other sizes give other flatten widths. Features (for the
    analyses) are the 100 ReLU outputs entering the last layer.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int | Sequence[int] = 28) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.image_size = _pair(image_size)
        side = [((s - 8) // 2 - 4) // 2 for s in self.image_size]
        if min(side) < 1:
            raise ValueError(f"image_size must be at least 18 for torchattacks_cnn, got {image_size}")
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5),
            nn.ReLU(),
            nn.Conv2d(16, 32, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Linear(64 * side[0] * side[1], 100), nn.ReLU())
        self.classifier = nn.Linear(100, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.fc(self.body(x).flatten(1))


# --------------------------------------------------------------------------------------- L-Softmax MNISTNet


def _conv_prelu_bn(c_in: int, c_out: int, padding: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=padding), nn.PReLU(), nn.BatchNorm2d(c_out)]


class MNISTNet(_FixedInput):
    """The MNIST network of the paper's MNIST experiments (MNISTNet of the L-Softmax PyTorch code, margin 1).

    Layout, from the description in paper.md §3:

    * input ``BatchNorm2d(in_channels)`` (the network normalises its own input), then a stem
      ``Conv(64, 3x3) - PReLU - BatchNorm``;
    * three stages of ``Conv(64, 3x3, padding 1) - PReLU - BatchNorm`` repeated ``stage_depths`` times, each
      stage followed by ``MaxPool 2``;
    * flatten (576 on 28x28) - ``Linear(576, 256)`` - ``BatchNorm1d(256)``;
    * ``Linear(256, C, bias=False)``: L-Softmax with margin m = 1 is this plain bias-free linear layer.

    What the description leaves open and what is chosen here:

    * **stage depths**: "3-4 convolutions per stage": chosen ``(3, 4, 4)``, the deeper stages last; change it
      with ``stage_depths``;
    * **padding**: 576 = 64 * 3 * 3 after three 2x2 pools on 28x28 forces 28 -> 26 -> 13 -> 6 -> 3, i.e. an
      unpadded stem convolution and size-preserving (padding 1) stage convolutions; chosen so;
    * **the stem's activation and BN**: chosen ``PReLU - BatchNorm`` after the stem convolution, like every
      other convolution;
    * **PReLU parameters**: one shared slope per layer (``nn.PReLU()``'s default, init 0.25);
    * **after the 256-wide BN**: no activation (none is described); the 256 BN outputs are the features;
    * **biases**: convolutions and the 576->256 linear keep PyTorch's default bias; only the last layer is
      bias-free, as the description says;
    * **initialisation**: PyTorch's defaults everywhere (the L-Softmax layer's own initialisation is not part of
      the description);
    * **other input sizes** (``image_size``): supported, the flatten width follows from the same arithmetic.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int | Sequence[int] = 28,
        stage_depths: Sequence[int] = (3, 4, 4),
        width: int = 64,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        if len(stage_depths) < 1 or any(d < 1 for d in stage_depths):
            raise ValueError(f"stage_depths must be a non-empty sequence of ints >= 1, got {stage_depths}")
        self.in_channels = in_channels
        self.image_size = _pair(image_size)
        self.stem = nn.Sequential(nn.BatchNorm2d(in_channels), *_conv_prelu_bn(in_channels, width, padding=0))
        stages = []
        side = [s - 2 for s in self.image_size]
        for depth in stage_depths:
            layers: list[nn.Module] = []
            for _ in range(depth):
                layers += _conv_prelu_bn(width, width, padding=1)
            stages.append(nn.Sequential(*layers, nn.MaxPool2d(2)))
            side = [s // 2 for s in side]
        if min(side) < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(stage_depths)} pooling stages")
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Sequential(nn.Linear(width * side[0] * side[1], hidden), nn.BatchNorm1d(hidden))
        self.classifier = nn.Linear(hidden, num_classes, bias=False)

    def forward_features(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.fc(self.stages(self.stem(x)).flatten(1))


# --------------------------------------------------------------------------------------- MLP


class MLP(ClassifierNet):
    """Flatten, then ``Linear - ReLU (- Dropout)`` for each hidden width, then ``Linear(hidden[-1], C)``.

    The input width is ``in_channels * H * W`` (``image_size=None``: just ``in_channels``, the feature dimension
    of ``(N, D)`` feature arrays).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 784,
        image_size: int | Sequence[int] | None = None,
        hidden: int | Sequence[int] = (256, 256),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden widths must be >= 1, got {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_features = in_channels * (1 if image_size is None else math.prod(_pair(image_size)))
        layers: list[nn.Module] = [nn.Flatten()]
        width = self.in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        if x[0].numel() != self.in_features:
            raise ValueError(f"MLP was built for {self.in_features} input features, got shape {tuple(x.shape)}")
        return self.body(x)


# --------------------------------------------------------------------------------------- small CNN


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallCNN(ClassifierNet):
    """A fast CNN for CPU demos: three ``Conv 3x3 - BN - ReLU`` blocks (widths w, 2w, 4w) with 2x2 max pools
    between them, global average pooling, optional dropout, ``Linear(4w, C)``.

    Any input of at least 4x4 works (the pooling is global). At ``width=32`` on 28x28 input it costs about
    7.5 M multiply-adds per image (0.23 M + 3.6 M + 3.6 M), so an MNIST epoch takes tens of seconds on 2 cores.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int | Sequence[int] | None = None,
        width: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.body = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        # Dropout sits between the features and the classifier, so features() reads them before it.
        return self.classifier(self.dropout(self.forward_features(x)))


# --------------------------------------------------------------------------------------- CIFAR ResNet-32
# He et al. (2016, §4.2)'s CIFAR ResNets are in neither torchvision nor timm (their ResNets have the ImageNet
# layout: 4 stages, 64-512 channels); the long-tailed literature (Cao et al. 2019, LDAM-DRW) trains ResNet-32.


class CosineLinear(nn.Linear):
    """A cosine classifier: logits ``<x / |x|, w_k / |w_k|>`` in [-1, 1], no bias (Cao et al. 2019 train LDAM with
    it and scale the logits by s = 30 in the loss). An ``nn.Linear`` subclass, so heads and cRT treat it as one."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, device=None, dtype=None) -> None:
        if bias:
            raise ValueError("CosineLinear has no bias")
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


class _BasicBlock(nn.Module):
    """Two 3x3 Conv-BN layers with an identity shortcut; a downsampling block's shortcut subsamples by 2 and
    zero-pads the new channels (He et al.'s option A: no parameters)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


class CifarResNet(ClassifierNet):
    """He et al.'s CIFAR ResNet-(6n+2): a 3x3 conv to 16 channels, three stages of ``n`` basic blocks (16, 32, 64
    channels; stride 2 entering stages 2 and 3), global average pooling, and a linear (or cosine) classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int | None = None, *,
                 blocks: int = 5, cosine: bool = False) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
        c_in = 16
        for stage, width in enumerate((16, 32, 64)):
            for b in range(blocks):
                layers.append(_BasicBlock(c_in, width, 2 if stage and not b else 1))
                c_in = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = (CosineLinear if cosine else nn.Linear)(64, num_classes)
        for m in self.modules():  # He initialisation, as the CIFAR ResNets were trained
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x)


# --------------------------------------------------------------------------------------- registrations


@register_model(in_channels=1, image_size=28, fixed_input=True, tags=("paper", "mnist", "cpu"))
def torchattacks_cnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> TorchattacksCNN:
    """The paper's adversarial-robustness MNIST CNN: Conv16-5, Conv32-5, pool, Conv64-5, pool, FC 576-100-C."""
    return TorchattacksCNN(num_classes, in_channels, image_size)


@register_model(in_channels=1, image_size=28, fixed_input=True, tags=("paper", "mnist", "cpu"))
def mnistnet(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, **kwargs) -> MNISTNet:
    """The paper's MNIST network (L-Softmax MNISTNet, m=1): BN, Conv64, 3 stages of Conv64-PReLU-BN, FC 256."""
    return MNISTNet(num_classes, in_channels, image_size, **kwargs)


@register_model(in_channels=784, image_size=None, tags=("cpu",))
def mlp(num_classes: int = 10, in_channels: int = 784, image_size: int | None = None, **kwargs) -> MLP:
    """A multilayer perceptron (hidden=(256, 256)) for feature arrays and quick demos; flattens its input."""
    return MLP(num_classes, in_channels, image_size, **kwargs)


@register_model(in_channels=3, image_size=32, tags=("cpu",))
def small_cnn(num_classes: int = 10, in_channels: int = 3, image_size: int | None = None, **kwargs) -> SmallCNN:
    """A small fast CNN for CPU demos: 3 Conv-BN-ReLU blocks (width w, 2w, 4w), global pooling, linear."""
    return SmallCNN(num_classes, in_channels, image_size, **kwargs)


@register_model(in_channels=3, image_size=32, tags=("cifar", "longtail"))
def resnet32_cifar(num_classes: int = 10, in_channels: int = 3, image_size: int | None = None, **kwargs) -> CifarResNet:
    """He et al.'s CIFAR ResNet-32 (0.46 M parameters), the long-tailed CIFAR baseline network (Cao et al. 2019);
    ``cosine=True`` gives it the cosine classifier that LDAM's scale s = 30 assumes."""
    return CifarResNet(num_classes, in_channels, image_size, blocks=5, **kwargs)
