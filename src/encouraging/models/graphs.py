"""Graph classifiers on PyTorch Geometric: the paper's SAGPool network and a GIN baseline.

Both take a PyG ``Batch`` (``x``, ``edge_index``, ``batch``) and return logits ``(num_graphs, C)``; like the
package's other networks they are :class:`~encouraging.models.nets.ClassifierNet`\\ s (``forward_features`` gives
the pooled graph embedding before the final linear layer ``classifier``), so the probe, margins and energies work
on them. PyG is imported when a network is built, not when this module is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nets import ClassifierNet
from .registry import register_model


def _readout(x: Tensor, batch: Tensor) -> Tensor:
    """``[max ‖ mean]`` over the nodes of each graph."""
    from torch_geometric.nn import global_max_pool, global_mean_pool

    return torch.cat([global_max_pool(x, batch), global_mean_pool(x, batch)], dim=1)


class SAGPoolNet(ClassifierNet):
    """SAGPool (Lee et al. 2019), hierarchical, as the paper's graph code trains it: three blocks of GCNConv(hidden)
    + ReLU + SAGPooling(ratio, GCNConv scorer), each followed by a ``[max ‖ mean]`` readout; the three readouts are
    summed and an MLP ``2h -> h -> h/2 -> C`` classifies, with dropout after its first layer."""

    def __init__(self, num_classes: int, in_channels: int, *, hidden: int = 128, ratio: float = 0.5,
                 dropout: float = 0.5, blocks: int = 3) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv, SAGPooling

        if not 0.0 < ratio <= 1.0 or not 0.0 <= dropout < 1.0 or blocks < 1 or hidden < 2:
            raise ValueError(f"need 0 < ratio <= 1, 0 <= dropout < 1, blocks >= 1, hidden >= 2; got ratio={ratio}, "
                             f"dropout={dropout}, blocks={blocks}, hidden={hidden}")
        self.convs = nn.ModuleList(GCNConv(in_channels if i == 0 else hidden, hidden) for i in range(blocks))
        self.pools = nn.ModuleList(SAGPooling(hidden, ratio, GNN=GCNConv) for _ in range(blocks))
        self.lin1, self.lin2 = nn.Linear(2 * hidden, hidden), nn.Linear(hidden, hidden // 2)
        self.dropout = dropout
        self.classifier = nn.Linear(hidden // 2, num_classes)

    def forward_features(self, data: Any) -> Tensor:
        x, edge_index, batch = data.x.float(), data.edge_index, data.batch
        pooled = 0
        for conv, pool in zip(self.convs, self.pools, strict=True):
            x = F.relu(conv(x, edge_index))
            x, edge_index, _, batch, _, _ = pool(x, edge_index, None, batch)
            pooled = pooled + _readout(x, batch)
        x = F.dropout(F.relu(self.lin1(pooled)), self.dropout, self.training)
        return F.relu(self.lin2(x))


class GINNet(ClassifierNet):
    """A GIN baseline (Xu et al. 2019): PyG's ``GIN`` (``layers`` GINConv layers with 2-layer MLPs, batch norm),
    sum pooling over nodes, then ``Linear(h, h)`` + ReLU + dropout and the classifier."""

    def __init__(self, num_classes: int, in_channels: int, *, hidden: int = 64, layers: int = 5,
                 dropout: float = 0.5) -> None:
        super().__init__()
        from torch_geometric.nn import GIN

        if layers < 1 or hidden < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"need layers >= 1, hidden >= 1, 0 <= dropout < 1; got {layers}, {hidden}, {dropout}")
        self.gnn = GIN(in_channels, hidden, layers, norm="batch_norm")
        self.lin, self.dropout = nn.Linear(hidden, hidden), dropout
        self.classifier = nn.Linear(hidden, num_classes)

    def forward_features(self, data: Any) -> Tensor:
        from torch_geometric.nn import global_add_pool

        x = global_add_pool(self.gnn(data.x.float(), data.edge_index), data.batch)
        return F.dropout(F.relu(self.lin(x)), self.dropout, self.training)


@register_model(in_channels=0, image_size=None, tags=("graph", "paper"))
def sagpool(num_classes: int = 2, in_channels: int = 3, image_size: None = None, **kwargs: Any) -> SAGPoolNet:
    """The paper's graph network: SAGPool (hierarchical), 3 x GCNConv(128) + SAGPooling(0.5), MLP head (PyG)."""
    return SAGPoolNet(num_classes, in_channels, **kwargs)


@register_model(in_channels=0, image_size=None, tags=("graph",))
def gin(num_classes: int = 2, in_channels: int = 3, image_size: None = None, **kwargs: Any) -> GINNet:
    """A GIN baseline for graph classification: 5 GINConv layers (64), sum pooling, MLP head (PyG)."""
    return GINNet(num_classes, in_channels, **kwargs)
