"""Every registered model: forward shape, backward, classifier and features; plus the paper's two MNIST nets."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from encouraging.models import (
    MNISTNet,
    create_model,
    features,
    get_classifier,
    get_model_info,
    head_paths,
    list_models,
    register_model,
    reset_classifier,
)

NUM_CLASSES = 7
# Networks with global pooling accept any size; 16 px keeps ResNet-50 and EfficientNet fast on a CPU. Networks
# with a flatten before a linear layer get the size they are built for.
SMALL_SIZE = 16


def _size(name: str) -> int | None:
    info = get_model_info(name)
    if info.image_size is None:
        return None
    return info.image_size if info.fixed_input else SMALL_SIZE


GRAPH_FEATURES = 5  # node features of the random graphs the graph networks get


def _is_graph(name: str) -> bool:
    return "graph" in get_model_info(name).tags


def _graphs(batch: int, molecules: bool = False):
    """``batch`` random graphs of 6 nodes (a ring plus chords) as one PyG ``Batch``; ``molecules``: OGB's integer
    atom (9) and bond (3) features instead of float node features."""
    data = pytest.importorskip("torch_geometric.data")
    ring = torch.tensor([[i, (i + 1) % 6] for i in range(6)] + [[0, 3], [1, 4]]).T
    edges = torch.cat([ring, ring.flip(0)], dim=1)

    def one():
        if molecules:
            return data.Data(x=torch.randint(0, 2, (6, 9)), edge_index=edges,
                             edge_attr=torch.randint(0, 2, (edges.shape[1], 3)))
        return data.Data(x=torch.randn(6, GRAPH_FEATURES), edge_index=edges)

    return data.Batch.from_data_list([one() for _ in range(batch)])


def _input(name: str, batch: int = 2, in_channels: int | None = None):
    if _is_graph(name):
        return _graphs(batch, molecules="molecule" in get_model_info(name).tags)
    c = in_channels or get_model_info(name).in_channels
    size = _size(name)
    return torch.randn(batch, c) if size is None else torch.randn(batch, c, size, size)


def _build(name: str, **kwargs) -> nn.Module:
    if _is_graph(name):
        pytest.importorskip("ogb" if "molecule" in get_model_info(name).tags else "torch_geometric")
        return create_model(name, num_classes=NUM_CLASSES, in_channels=GRAPH_FEATURES, **kwargs)
    return create_model(name, num_classes=NUM_CLASSES, image_size=_size(name), **kwargs)


CLASSIFIERS = [n for n in list_models() if "translation" not in get_model_info(n).tags]  # seq2seq: test_seq2seq.py


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_forward_backward_classifier_features(name):
    model = _build(name)
    x = _input(name)
    out = model(x)
    assert out.shape == (2, NUM_CLASSES) and out.dtype == torch.float32
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    first = next(p for p in model.parameters() if p.requires_grad)
    assert torch.isfinite(first.grad).all()  # the gradient reached the input end of the network

    clf = get_classifier(model)
    assert isinstance(clf, nn.Linear) and clf.out_features == NUM_CLASSES
    model.eval()
    with torch.no_grad():
        feats = features(model, x)
        logits = model(x)
    assert feats.shape == (2, clf.in_features)
    # the classifier is the last layer: logits are exactly classifier(features)
    torch.testing.assert_close(clf(feats), logits, rtol=1e-5, atol=1e-5)
    assert model.get_submodule(head_paths(model)[1]) is clf, "features() must leave the model as it was"


@pytest.mark.parametrize("name", ["small_cnn", "torchattacks_cnn", "efficientnet_b0"])
def test_reset_classifier(name):
    model = _build(name)
    old = get_classifier(model)
    new = reset_classifier(model, num_classes=3)
    assert get_classifier(model) is new and new is not old
    assert new.in_features == old.in_features and (new.bias is None) == (old.bias is None)
    assert model(_input(name)).shape == (2, 3)


@pytest.mark.parametrize("name", ["resnet18_cifar", "resnet18", "efficientnet_b0", "small_cnn", "torchattacks_cnn"])
def test_other_channel_counts(name):
    channels = 3 if get_model_info(name).in_channels == 1 else 1
    model = _build(name, in_channels=channels)
    assert model(_input(name, in_channels=channels)).shape == (2, NUM_CLASSES)


def test_create_model_drops_none_and_rejects_unknown_names():
    model = create_model("small_cnn", num_classes=None, in_channels=None, image_size=None, width=None)
    assert get_classifier(model).out_features == 10 and get_classifier(model).in_features == 4 * 32
    assert get_classifier(create_model("small_cnn", width=8)).in_features == 32
    with pytest.raises(ValueError, match=r"model must be one of \[.*'mnistnet'.*\] or 'timm:<name>', got 'lenet'"):
        create_model("lenet")
    with pytest.raises(ValueError, match="already registered"):
        register_model(lambda **kw: nn.Linear(1, 1), name="mlp")
    with pytest.raises(ValueError, match="reserved"):
        register_model(lambda **kw: nn.Linear(1, 1), name="timm:x")
    assert list_models("resnet*_cifar") == ["resnet18_cifar", "resnet32_cifar", "resnet50_cifar"]
    assert dict(list_models("mnist*", with_description=True))["mnistnet"].startswith("The paper's MNIST network")


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_timm_without_timm_says_how_to_get_it():
    with pytest.raises(ImportError, match="pip install timm"):
        create_model("timm:resnet18", num_classes=3)


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
def test_timm_model():  # pragma: no cover - depends on the environment
    model = create_model("timm:resnet18", num_classes=3, in_channels=1)
    x = torch.randn(2, 1, 32, 32)
    assert model(x).shape == (2, 3) and get_classifier(model).out_features == 3
    assert features(model, x).shape == (2, get_classifier(model).in_features)


# --------------------------------------------------------------------------------------- the paper's networks


def test_torchattacks_cnn_layout():
    model = create_model("torchattacks_cnn")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 16, (5, 5), (0, 0)),
        (16, 32, (5, 5), (0, 0)),
        (32, 64, (5, 5), (0, 0)),
    ]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(576, 100), (100, 10)]
    assert sum(p.numel() for p in model.parameters()) == 416 + 12832 + 51264 + 57700 + 1010
    with pytest.raises(ValueError, match=r"built for \(N, 1, 28, 28\)"):
        model(torch.randn(2, 1, 32, 32))


def test_mnistnet_layout():
    model = create_model("mnistnet")
    assert isinstance(model, MNISTNet)
    assert isinstance(model.stem[0], nn.BatchNorm2d) and model.stem[0].num_features == 1
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 3 + 4 + 4 and all(c.out_channels == 64 and c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.PReLU) for m in model.modules()) == len(convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert model.fc[0].in_features == 576 and model.fc[0].out_features == 256
    assert isinstance(model.fc[1], nn.BatchNorm1d)
    assert model.classifier.bias is None and model.classifier.in_features == 256
    shallow = create_model("mnistnet", stage_depths=(3, 3, 3))
    assert sum(isinstance(m, nn.Conv2d) for m in shallow.modules()) == 10


def test_resnet32_layout_and_its_cosine_classifier():
    model = create_model("resnet32_cifar", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 3 * 5 * 2  # 31 convolutions and the classifier: 32 weighted layers
    assert [c.out_channels for c in convs[::10]] == [16, 16, 32, 64] and convs[11].stride == (2, 2)
    assert sum(p.numel() for p in model.parameters()) == 464154  # He et al.: 0.46 M
    x = torch.randn(3, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (3, 64) and torch.allclose(model.classifier(features), model(x))
    cosine = create_model("resnet32_cifar", num_classes=10, cosine=True)
    cosine.eval()
    out = cosine(x)
    w = cosine.classifier.weight
    expected = torch.nn.functional.normalize(cosine.forward_features(x), dim=1) @ (w / w.norm(dim=1, keepdim=True)).T
    assert torch.allclose(out, expected, atol=1e-6) and out.abs().max() <= 1 + 1e-6
    fresh = reset_classifier(cosine)  # cRT keeps the kind of head
    assert type(fresh).__name__ == "CosineLinear" and fresh.bias is None and not torch.equal(fresh.weight, w)
    with pytest.raises(ValueError, match="no bias"):
        type(fresh)(64, 10, bias=True)


def test_cifar_stem():
    model = create_model("resnet18_cifar")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    standard = create_model("resnet18")
    assert standard.conv1.kernel_size == (7, 7) and isinstance(standard.maxpool, nn.MaxPool2d)


def test_efficientnet_features_come_before_dropout():
    model = create_model("efficientnet_b0", num_classes=4, dropout=0.5)
    assert head_paths(model) == ("classifier", "classifier.1")
    assert model.classifier[0].p == 0.5
    model.train()
    x = torch.randn(2, 3, SMALL_SIZE, SMALL_SIZE)
    for m in model.modules():  # freeze BN statistics so two training-mode passes see the same network
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    torch.manual_seed(1)
    a = features(model, x)
    torch.manual_seed(2)
    b = features(model, x)
    torch.testing.assert_close(a, b)  # dropout (random) would make them differ


def test_mlp_on_features_and_images():
    model = create_model("mlp", num_classes=3, in_channels=5, hidden=(8,))
    assert model(torch.randn(4, 5)).shape == (4, 3) and features(model, torch.randn(4, 5)).shape == (4, 8)
    image_mlp = create_model("mlp", in_channels=1, image_size=28)
    assert image_mlp(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="784 input features"):
        image_mlp(torch.randn(2, 1, 32, 32))


def test_helpers_on_unregistered_and_wrapped_models():
    plain = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 4))
    assert get_classifier(plain) is plain[3]
    x = torch.randn(3, 2, 2, 3)
    torch.testing.assert_close(plain[3](features(plain, x)), plain(x))
    wrapped = nn.DataParallel(create_model("small_cnn", num_classes=5))
    assert get_classifier(wrapped).out_features == 5
    assert features(wrapped, torch.randn(2, 3, 16, 16)).shape == (2, 128)
    with pytest.raises(ValueError, match="no nn.Linear"):
        get_classifier(nn.Conv2d(1, 1, 1))
