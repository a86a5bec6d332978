"""A registry of models in the style of timm's: ``@register_model``, ``list_models``, ``create_model``.

Every entrypoint is called as ``fn(num_classes=..., in_channels=..., image_size=..., **kwargs)`` with ``None``
values dropped, so a config can leave any option unset and get the model's default. Each entry also records
where its classifier sits (see :mod:`encouraging.models.heads`), so the analyses can take penultimate features
and re-initialize the last layer of any registered model. ``create_model("timm:<name>", ...)`` builds a timm
model when timm is installed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class ModelInfo:
    """A registered model.

    Attributes:
        name: registry name.
        description: one line (the entrypoint docstring's first line unless given).
        fn: the entrypoint, ``fn(num_classes, in_channels, image_size, **kwargs) -> nn.Module``.
        head: dotted path of the module whose *input* is the penultimate feature vector (replaced by
            ``nn.Identity`` to read features; for EfficientNet it is the dropout + linear ``classifier``).
        classifier: dotted path of the final ``nn.Linear`` (``head`` itself when ``None``).
        in_channels, image_size: the defaults of the entrypoint: the input the model is designed for.
        fixed_input: the model accepts only ``image_size`` inputs (a flatten before a linear layer).
        tags: free labels (``"paper"``, ``"cpu"``, ``"imagenet"`` ...) for filtering.
    """

    name: str
    description: str
    fn: Callable[..., nn.Module]
    head: str = "classifier"
    classifier: str | None = None
    in_channels: int = 3
    image_size: int | None = 32
    fixed_input: bool = False
    tags: tuple[str, ...] = ()

    @property
    def classifier_path(self) -> str:
        return self.classifier or self.head


_MODELS: dict[str, ModelInfo] = {}


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    head: str = "classifier",
    classifier: str | None = None,
    in_channels: int = 3,
    image_size: int | None = 32,
    fixed_input: bool = False,
    tags: Iterable[str] = (),
) -> Any:
    """Register a model entrypoint; usable as ``@register_model`` or ``@register_model(head="fc", ...)``.

    A name can be registered once (``ValueError`` otherwise); names starting with ``timm:`` are reserved.
    """

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        if key.startswith(TIMM_PREFIX):
            raise ValueError(f"model names starting with {TIMM_PREFIX!r} are reserved for timm, got {key!r}")
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered")
        doc = (f.__doc__ or "").strip().splitlines()
        _MODELS[key] = ModelInfo(
            name=key,
            description=description or (doc[0].strip() if doc else key),
            fn=f,
            head=head,
            classifier=classifier,
            in_channels=in_channels,
            image_size=image_size,
            fixed_input=fixed_input,
            tags=tuple(tags),
        )
        return f

    return wrap(fn) if fn is not None else wrap


def list_models(
    filter: str = "*", exclude_filters: Iterable[str] | str = (), *, with_description: bool = False
) -> list[str] | list[tuple[str, str]]:
    """Registered model names matching the fnmatch pattern ``filter`` and none of ``exclude_filters``, sorted.

    timm models are not listed (``create_model("timm:<name>")`` reaches them). With ``with_description=True``,
    ``(name, description)`` pairs instead.
    """
    excludes = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters)
    names = sorted(
        n for n in _MODELS if fnmatch.fnmatch(n, filter) and not any(fnmatch.fnmatch(n, e) for e in excludes)
    )
    if with_description:
        return [(n, _MODELS[n].description) for n in names]
    return names


def get_model_info(name: str) -> ModelInfo:
    """The ``ModelInfo`` of a registered model; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"model must be one of {list_models()} or 'timm:<name>', got {name!r}") from None


def create_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model (or ``timm:<name>``); ``None`` arguments are dropped so defaults apply.

    Args:
        name: a name from :func:`list_models`, or ``"timm:<timm model name>"``.
        num_classes: outputs of the classifier (each entrypoint defaults to 10).
        in_channels: input channels (for ``mlp``: with ``image_size=None``, the feature dimension).
        image_size: input side (or ``(H, W)``); models with a flatten before a linear layer are built for it.
        **kwargs: model options (``width``, ``hidden``, ``dropout`` ...; see each entrypoint).

    Returns:
        The model, with its classifier location recorded for :func:`encouraging.models.get_classifier`.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    args = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size, **kwargs}
    args = {k: v for k, v in args.items() if v is not None}
    if name.startswith(TIMM_PREFIX):
        return _create_timm(name[len(TIMM_PREFIX) :], args)
    info = get_model_info(name)
    model = info.fn(**args)
    # A plain attribute (not a buffer): survives deepcopy and pickling, never enters the state_dict.
    model._encouraging_head = (info.head, info.classifier_path)
    model._encouraging_name = name
    return model


def _create_timm(name: str, args: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError as err:
        raise ImportError(
            f"create_model('timm:{name}') needs timm, which is not installed ({err}); install it with "
            "`pip install timm`, or pick one of the built-in models: " + ", ".join(list_models())
        ) from err
    args = dict(args)
    # timm calls it in_chans; image_size is not a generic timm argument (ViTs take img_size=... as a kwarg).
    if "in_channels" in args:
        args["in_chans"] = args.pop("in_channels")
    args.pop("image_size", None)
    args.setdefault("pretrained", False)
    model = timm.create_model(name, **args)
    model._encouraging_name = TIMM_PREFIX + name
    return model
