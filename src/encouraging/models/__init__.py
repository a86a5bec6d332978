"""Models: a timm-style registry of the paper's networks and torchvision's, and helpers for their last layer.

Depends on torch (torchvision for the ResNets and EfficientNet, timm optionally); nothing of ``encouraging``.

>>> from encouraging.models import create_model, features, get_classifier
>>> model = create_model("torchattacks_cnn", num_classes=10)
>>> get_classifier(model).out_features
10
"""

from . import graphs as _graphs  # noqa: F401  (registers the graph networks; PyG is imported when one is built)
from . import nets as _nets  # noqa: F401  (registers the models)
from . import seq2seq as _seq2seq  # noqa: F401  (registers the translation transformers; Transformers imported on use)
from . import tv as _tv  # noqa: F401
from .heads import features, get_classifier, head_paths, reset_classifier, unwrap_model
from .nets import MLP, ClassifierNet, MNISTNet, SmallCNN, TorchattacksCNN
from .registry import TIMM_PREFIX, ModelInfo, create_model, get_model_info, list_models, register_model

__all__ = [
    "MLP",
    "TIMM_PREFIX",
    "ClassifierNet",
    "MNISTNet",
    "ModelInfo",
    "SmallCNN",
    "TorchattacksCNN",
    "create_model",
    "features",
    "get_classifier",
    "get_model_info",
    "head_paths",
    "list_models",
    "register_model",
    "reset_classifier",
    "unwrap_model",
]
