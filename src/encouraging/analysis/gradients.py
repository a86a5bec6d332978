"""Which examples still drive learning: the target-logit gradient and the per-example parameter-gradient norm as
functions of the target probability ``p_y`` (paper §4.1).

For CE, ``dL/df_y = p_y - 1`` vanishes as an example becomes well classified; for EL without label smoothing it
is ``(p_y - 1) s(p_y)`` with ``s = 1/(1 - p)`` up to ``log_end`` (so exactly -1 for the full bonus) and
``1 + p/(1 - log_end)`` beyond. Both depend on ``p_y`` alone, so the measured per-example values must lie on the
analytic curve; label smoothing adds a dependence on the other probabilities.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..losses import disable_checks
from .outputs import first_batches

P_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 0.999, 1.0)
WELL_CLASSIFIED = 0.9  # p_y above this counts as well classified in the summaries


def target_logit_grad(criterion: nn.Module, logits: Tensor, target: Tensor) -> Tensor:
    """``dL_i/df_{i,y_i}`` per example for a per-example criterion (``reduction='none'``), by autograd."""
    if getattr(criterion, "reduction", "none") != "none":
        raise ValueError(f"criterion must have reduction='none', got {criterion.reduction!r}")
    z = logits.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(criterion(z, target).sum(), z)
    return grad.gather(1, target[:, None]).squeeze(1)


def analytic_target_grad(criterion: nn.Module, p: Tensor, num_classes: int = 10) -> Tensor:
    """The criterion's ``dL/df_y`` at target probability ``p`` (the other classes sharing ``1 - p`` equally).

    Computed from the library's own loss on float64 logits ``[log p, log((1-p)/(C-1)), ...]``, not re-derived:
    this is the curve the measured points should follow.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    p = p.double().clamp(1e-12, 1 - 1e-12)
    logits = torch.cat([p.log()[:, None], torch.log((1 - p) / (num_classes - 1))[:, None].expand(-1, num_classes - 1)],
                       1)
    return target_logit_grad(criterion, logits, torch.zeros(len(p), dtype=torch.long))


def per_example_grad_norms(model: nn.Module, criterion: nn.Module, x: Tensor, y: Tensor, chunk: int = 64) -> Tensor:
    """``||dL_i/dtheta||_2`` over all trainable parameters, one per example, with the model in eval mode.

    Uses ``torch.func`` (vmap of grad over a functional call of the model) in chunks of ``chunk`` examples.
    """
    from torch.func import functional_call, grad, vmap

    was_training = model.training
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(params, buffers, xi, yi):
        out = functional_call(model, (params, buffers), (xi[None],))
        return criterion(out.float(), yi[None]).sum()

    per_example = vmap(grad(loss_one), in_dims=(None, None, 0, 0))
    norms = []
    try:
        with disable_checks():  # the target-range check is a data-dependent branch, which vmap cannot trace
            for i in range(0, len(y), chunk):
                grads = per_example(params, buffers, x[i:i + chunk], y[i:i + chunk])
                norms.append(torch.stack([g.flatten(1).double().pow(2).sum(1) for g in grads.values()]).sum(0).sqrt())
    finally:
        model.train(was_training)
    return torch.cat(norms).float().cpu()


def _looped_grad_norms(model: nn.Module, criterion: nn.Module, x: Any, y: Tensor, keep: int) -> Tensor:
    """The first ``keep`` per-example gradient norms of one batch, one backward pass per example through the shared
    forward graph: for inputs ``vmap`` cannot split (a PyG graph batch). Exact as long as the model in eval mode
    lets no example influence another (true of BatchNorm in eval mode and of per-graph pooling)."""
    params = [p for p in model.parameters() if p.requires_grad]
    losses = criterion(model(x).float(), y)
    norms = []
    for i in range(keep):
        grads = torch.autograd.grad(losses[i], params, retain_graph=i + 1 < keep, allow_unused=True)
        norms.append(torch.stack([g.double().pow(2).sum() for g in grads if g is not None]).sum().sqrt())
    return torch.stack(norms).float().cpu()


def param_grad_norms(model: nn.Module, criterion: nn.Module, batches: Any, n: int) -> Tensor:
    """Per-example parameter-gradient norms of the first ``n`` examples of ``batches`` (a source yielding
    ``(inputs, target)``): :func:`per_example_grad_norms` for tensor inputs, one backward per example otherwise."""
    was_training = model.training
    model.eval()
    parts = []
    try:
        for x, y, keep in first_batches(batches, n):
            if isinstance(x, Tensor):
                parts.append(per_example_grad_norms(model, criterion, x[:keep], y[:keep]))
            else:
                parts.append(_looped_grad_norms(model, criterion, x, y, keep))
    finally:
        model.train(was_training)
    return torch.cat(parts)


def gradient_rows(criterion: nn.Module, logits: Tensor, target: Tensor, split: str, *,
                  param_norms: Tensor | None = None, edges: tuple[float, ...] = P_EDGES) -> list[dict]:
    """Binned rows (by ``p_y``): count, mean ``p_y``, mean ``|dL/df_y|`` measured and analytic, and the mean
    per-example parameter-gradient norm where ``param_norms`` (for the first ``len(param_norms)`` examples) is given;
    plus a ``summary`` row for the well-classified examples (``p_y > 0.9``).
    """
    p = logits.double().softmax(1).gather(1, target[:, None]).squeeze(1)
    measured = target_logit_grad(criterion, logits.double(), target).abs()
    analytic = analytic_target_grad(criterion, p, logits.shape[1]).abs()
    bins = torch.bucketize(p, torch.tensor(edges[1:-1], dtype=torch.float64), right=True)
    n_param = 0 if param_norms is None else len(param_norms)
    rows = []
    for b in range(len(edges) - 1):
        mask = bins == b
        pmask = mask[:n_param]
        rows.append({
            "split": split, "type": "bin", "lo": edges[b], "hi": edges[b + 1], "count": int(mask.sum()),
            "p_mean": _mean(p[mask]), "target_grad": _mean(measured[mask]), "analytic": _mean(analytic[mask]),
            "param_count": int(pmask.sum()),
            "param_grad_norm": _mean(param_norms[pmask]) if param_norms is not None else math.nan,
        })
    well = p > WELL_CLASSIFIED
    summary = {
        "split": split, "type": "summary", "threshold": WELL_CLASSIFIED, "frac_well": float(well.double().mean()),
        "target_grad_well": _mean(measured[well]), "target_grad_all": _mean(measured),
        # the share of the total target-logit push that comes from well-classified examples
        "share_well": float(measured[well].sum() / measured.sum()) if measured.sum() > 0 else math.nan,
        "max_abs_dev": float((measured - analytic).abs().max()),
    }
    if param_norms is not None:
        summary["param_grad_norm_well"] = _mean(param_norms[well[:n_param]])
        summary["param_grad_norm_all"] = _mean(param_norms)
    return rows + [summary]


def _mean(x: Tensor) -> float:
    return float(x.double().mean()) if x.numel() else math.nan
