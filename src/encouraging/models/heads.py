"""The last layer of any model: find it, read the features that enter it, replace it.

The analyses need the penultimate features (linear probe, margins, energy) and a fresh classifier (cRT). Where
the classifier sits is found, in order, from:

1. the paths recorded by :func:`encouraging.models.create_model` (``model._encouraging_head``);
2. the class attributes ``head_path`` / ``classifier_path`` of this package's own networks;
3. timm's ``get_classifier()`` / ``forward_head(pre_logits=True)``;
4. otherwise the last ``nn.Linear`` in ``model.modules()`` order (a heuristic that fits most plain networks).

``DistributedDataParallel``, ``DataParallel`` and ``torch.compile`` wrappers are looked through.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP / DataParallel / ``torch.compile`` wrappers (the model itself if unwrapped)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.") and hasattr(model, "get_classifier")


def _path_of(model: nn.Module, target: nn.Module) -> str:
    for path, module in model.named_modules():
        if module is target:
            return path
    raise ValueError(f"{type(target).__name__} is not a submodule of {type(model).__name__}")


def head_paths(model: nn.Module) -> tuple[str, str]:
    """``(head, classifier)``: the module whose input is the feature vector and the final ``nn.Linear``.

    The two differ when dropout (or another feature-preserving op) sits between them, as in EfficientNet's
    ``classifier = Sequential(Dropout, Linear)``: features are read before the dropout.
    """
    model = unwrap_model(model)
    recorded = getattr(model, "_encouraging_head", None)
    if recorded is not None:
        return recorded
    if isinstance(getattr(type(model), "head_path", None), str):
        head = type(model).head_path
        return head, getattr(type(model), "classifier_path", None) or head
    if _is_timm(model):
        path = _path_of(model, model.get_classifier())
        return path, path
    last = None
    for path, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = path
    if last is None:
        raise ValueError(f"cannot find the classifier of {type(model).__name__}: it has no nn.Linear")
    return last, last


def get_classifier(model: nn.Module) -> nn.Linear:
    """The final ``nn.Linear`` of ``model`` (its ``out_features`` is the number of classes)."""
    model = unwrap_model(model)
    if callable(getattr(model, "classifier_layer", None)):
        layer = model.classifier_layer()
    else:
        layer = model.get_submodule(head_paths(model)[1])
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"the classifier of {type(model).__name__} is a {type(layer).__name__}, not an nn.Linear")
    return layer


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at ``path`` and return what was there."""
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, attr)
    setattr(parent, attr, module)
    return old


@contextmanager
def _head_replaced(model: nn.Module, path: str) -> Iterator[None]:
    old = _set_submodule(model, path, nn.Identity())
    try:
        yield
    finally:
        _set_submodule(model, path, old)


def features(model: nn.Module, x: Tensor) -> Tensor:
    """The penultimate features of ``model`` on ``x``: the input of the classifier, shape ``(N, D)``.

    ``D == get_classifier(model).in_features``. Runs in the model's current mode (call ``model.eval()`` first
    for inference features) and with autograd as the caller has it.
    """
    model = unwrap_model(model)
    if callable(getattr(model, "forward_features", None)) and isinstance(getattr(type(model), "head_path", None), str):
        return model.forward_features(x)
    if _is_timm(model):
        return model.forward_head(model.forward_features(x), pre_logits=True)
    head, _ = head_paths(model)
    if not head:
        raise ValueError(f"the head of {type(model).__name__} is the whole model; it has no separate features")
    with _head_replaced(model, head):
        out = model(x)
    return out.flatten(1)


def reset_classifier(model: nn.Module, num_classes: int | None = None, *, bias: bool | None = None) -> nn.Linear:
    """Replace the final ``nn.Linear`` by a freshly initialised one of the same class (for cRT, probes, a new label
    set).

    Args:
        model: the model, changed in place.
        num_classes: outputs of the new layer; the old layer's ``out_features`` by default.
        bias: whether the new layer has a bias; the old layer's choice by default.

    Returns:
        The new layer (on the old layer's device and dtype).
    """
    model = unwrap_model(model)
    old = get_classifier(model)
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    new = type(old)(  # the same kind of layer: a cosine classifier stays one
        old.in_features,
        num_classes or old.out_features,
        bias=(old.bias is not None) if bias is None else bias,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    _set_submodule(model, _path_of(model, old), new)
    return new
