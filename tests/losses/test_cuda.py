"""The losses on a CUDA device: same values and gradients as on the CPU, compiled (inductor) and in bf16."""

from __future__ import annotations

import pytest
import torch

from encouraging.losses import binary_encouraging_loss, encouraging_loss, poly_loss

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CASES = [
    {},
    {"log_end": 1.0},
    {"label_smoothing": 0.1},
    {"label_smoothing": 0.1, "log_end": 1.0, "bonus_weight": "same"},
    {"bonus": "power", "gamma": 2.0, "bonus_start": 0.3},
]


def _inputs(n=257, c=1001, device="cpu"):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(n, c, generator=g) * 4).to(device).requires_grad_()
    y = torch.randint(c, (n,), generator=g)
    y[::7] = -100
    w = torch.rand(c, generator=g) + 0.5
    return x, y.to(device), w.to(device)


@pytest.mark.parametrize("kwargs", CASES, ids=str)
def test_cuda_matches_cpu(kwargs):
    xc, yc, wc = _inputs()
    xg, yg, wg = _inputs(device="cuda")
    lc = encouraging_loss(xc, yc, wc, **kwargs)
    lg = encouraging_loss(xg, yg, wg, **kwargs)
    lc.backward()
    lg.backward()
    torch.testing.assert_close(lg.cpu(), lc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xg.grad.cpu(), xc.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kwargs", CASES[:4], ids=str)
def test_inductor_fullgraph_on_cuda(kwargs):
    torch._dynamo.reset()
    x, y, w = _inputs(device="cuda")
    eager = encouraging_loss(x, y, w, **kwargs)
    (g_eager,) = torch.autograd.grad(eager, x)
    compiled = torch.compile(lambda a, b: encouraging_loss(a, b, w, **kwargs), fullgraph=True)
    value = compiled(x, y)
    (g_compiled,) = torch.autograd.grad(value, x)
    torch.testing.assert_close(value, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-4, atol=1e-6)


def test_bf16_and_fp16_inputs_on_cuda():
    x, y, _ = _inputs(device="cuda")
    ref = encouraging_loss(x.detach().double(), y)
    for dtype, tol in ((torch.bfloat16, 3e-2), (torch.float16, 3e-3)):
        xh = x.detach().to(dtype).requires_grad_()
        loss = encouraging_loss(xh, y)
        loss.backward()
        assert loss.dtype == dtype and torch.isfinite(xh.grad).all()
        assert abs(loss.double().item() - ref.item()) <= tol * max(1.0, abs(ref.item()))


def test_autocast_bf16_training_step_on_cuda():
    model = torch.nn.Linear(64, 10).cuda()
    x = torch.randn(32, 64, device="cuda")
    y = torch.randint(10, (32,), device="cuda")
    multi_label = (y[:, None] == torch.arange(10, device="cuda")).float()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x)
        loss = encouraging_loss(logits, y) + poly_loss(logits, y) + binary_encouraging_loss(logits, multi_label)
    loss.backward()
    assert torch.isfinite(model.weight.grad).all()
