"""Graph classifiers on PyTorch Geometric: the paper's SAGPool network, a GIN baseline, and OGB's GIN with a virtual
node for molecules.

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


def _mlp(dim: int, out: int, final_act: bool) -> nn.Sequential:
    """``Linear(dim, 2 dim)`` + BN + ReLU + ``Linear(2 dim, out)`` (+ BN + ReLU when ``final_act``)."""
    layers: list[nn.Module] = [nn.Linear(dim, 2 * dim), nn.BatchNorm1d(2 * dim), nn.ReLU(), nn.Linear(2 * dim, out)]
    return nn.Sequential(*layers, *([nn.BatchNorm1d(out), nn.ReLU()] if final_act else []))


class VirtualNodeGIN(ClassifierNet):
    """OGB's ``gin-virtual`` baseline for molecules (Hu et al. 2020): atom and bond features embedded with ogb's
    ``AtomEncoder`` / ``BondEncoder``, ``layers`` GIN layers with edge features (PyG ``GINEConv``, learnable eps,
    MLP ``h -> 2h -> h``) each followed by batch norm, ReLU (not after the last) and dropout; a virtual node joined
    to every atom (its embedding added to the atoms before each layer, updated by an MLP of its sum with the summed
    atoms after each layer but the last); mean pooling; a linear layer to one logit per task."""

    def __init__(self, num_classes: int, in_channels: int = 9, *, hidden: int = 300, layers: int = 5,
                 dropout: float = 0.5) -> None:
        super().__init__()
        from ogb.graphproppred.mol_encoder import AtomEncoder, BondEncoder
        from torch_geometric.nn import GINEConv

        if layers < 2 or hidden < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"need layers >= 2, hidden >= 1, 0 <= dropout < 1; got {layers}, {hidden}, {dropout}")
        self.atoms = AtomEncoder(hidden)
        self.bonds = nn.ModuleList(BondEncoder(hidden) for _ in range(layers))
        self.convs = nn.ModuleList(GINEConv(_mlp(hidden, hidden, False), train_eps=True) for _ in range(layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(layers))
        self.virtual = nn.Embedding(1, hidden)
        nn.init.zeros_(self.virtual.weight)
        self.virtual_mlps = nn.ModuleList(_mlp(hidden, hidden, True) for _ in range(layers - 1))
        self.dropout = dropout
        self.classifier = nn.Linear(hidden, num_classes)

    def forward_features(self, data: Any) -> Tensor:
        from torch_geometric.nn import global_add_pool, global_mean_pool

        batch = data.batch
        virtual = self.virtual(torch.zeros(int(batch.max()) + 1, dtype=torch.long, device=batch.device))
        h = self.atoms(data.x)
        last = len(self.convs) - 1
        for i, (conv, bonds, norm) in enumerate(zip(self.convs, self.bonds, self.norms, strict=True)):
            h = h + virtual[batch]
            out = norm(conv(h, data.edge_index, bonds(data.edge_attr)))
            out = F.dropout(out if i == last else F.relu(out), self.dropout, self.training)
            if i < last:
                virtual = F.dropout(self.virtual_mlps[i](global_add_pool(h, batch) + virtual), self.dropout,
                                    self.training)
            h = out
        return global_mean_pool(h, batch)


@register_model(in_channels=0, image_size=None, tags=("graph", "paper"))
def sagpool(num_classes: int = 2, in_channels: int = 3, image_size: None = None, **kwargs: Any) -> SAGPoolNet:
    """The paper's graph network: SAGPool (hierarchical), 3 x GCNConv(128) + SAGPooling(0.5), MLP head (PyG)."""
    return SAGPoolNet(num_classes, in_channels, **kwargs)


@register_model(in_channels=0, image_size=None, tags=("graph",))
def gin(num_classes: int = 2, in_channels: int = 3, image_size: None = None, **kwargs: Any) -> GINNet:
    """A GIN baseline for graph classification: 5 GINConv layers (64), sum pooling, MLP head (PyG)."""
    return GINNet(num_classes, in_channels, **kwargs)


@register_model(in_channels=9, image_size=None, tags=("graph", "molecule"))
def gin_virtual(num_classes: int = 1, in_channels: int = 9, image_size: None = None, **kwargs: Any) -> VirtualNodeGIN:
    """OGB's gin-virtual molecule baseline: 5 GIN layers (300) with bond features and a virtual node (PyG, ogb)."""
    return VirtualNodeGIN(num_classes, in_channels, **kwargs)
