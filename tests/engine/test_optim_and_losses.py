"""Learning-rate schedules, loss presets and specs, and the bonus schedule applied by the trainer."""

from __future__ import annotations

import math

import pytest
import torch

from encouraging.engine.config import LossConfig, OptimConfig
from encouraging.engine.criteria import (
    build_criterion,
    build_schedule,
    canonical,
    loss_label,
    parse_loss_spec,
    split_loss_specs,
)
from encouraging.engine.optim import build_optimizer, build_scheduler, lr_factor
from encouraging.losses import EncouragingLoss, PolyLoss


def test_lr_factors():
    multistep = OptimConfig(schedule="multistep", milestones=[50, 64], gamma=0.1)
    assert [lr_factor(multistep, e, 100) for e in (0, 49.9, 50, 63, 64, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = OptimConfig(schedule="cosine", warmup_epochs=2)
    assert lr_factor(cosine, 1, 10) == pytest.approx(0.5)  # half-way through the warm-up
    assert lr_factor(cosine, 2, 10) == pytest.approx(1.0)
    assert lr_factor(cosine, 6, 10) == pytest.approx(0.5)
    assert lr_factor(cosine, 10, 10) == pytest.approx(0.0, abs=1e-12)
    exp_step = OptimConfig(schedule="exp_step", gamma=0.97, step_epochs=2.4)
    assert lr_factor(exp_step, 5, 450) == pytest.approx(0.97**2)
    with pytest.raises(ValueError, match="optim.schedule"):
        lr_factor(OptimConfig(schedule="poly"), 0, 1)


def test_scheduler_steps_per_batch_and_optimizer_names():
    param = torch.nn.Parameter(torch.zeros(1))
    cfg = OptimConfig(name="sgd", lr=0.2, schedule="cosine")
    opt = build_optimizer([param], cfg)
    sched = build_scheduler(opt, cfg, epochs=2, steps_per_epoch=10)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi / 2)))
    for name in ("adam", "adamw", "rmsprop"):
        assert build_optimizer([param], OptimConfig(name=name)).__class__.__name__.lower() == name
    with pytest.raises(ValueError, match="optim.name"):
        build_optimizer([param], OptimConfig(name="lion"))


def test_loss_specs_presets_and_labels():
    assert split_loss_specs("ce, el(log_end=1.0, bonus_scale=0.5),poly1") == [
        "ce", "el(log_end=1.0, bonus_scale=0.5)", "poly1"]
    el = parse_loss_spec("el(log_end=1.0, bonus_scale=0.5)")
    assert (el.log_end, el.bonus_scale) == (1.0, 0.5) and loss_label(el) == "EL (LE=1, rho=0.5)"
    ce = parse_loss_spec("ce", LossConfig(log_end=0.3, label_smoothing=0.2))
    assert ce == LossConfig(name="ce")  # unused fields reset: equal losses hash equally
    assert parse_loss_spec("ce_ls").label_smoothing == 0.1 and loss_label(parse_loss_spec("ce_ls")) == "CE+LS (0.1)"
    with pytest.raises(ValueError, match="loss must be one of"):
        canonical(LossConfig(name="hinge"))
    with pytest.raises(ValueError, match="valid keys"):
        parse_loss_spec("el(logend=1)")
    criterion = build_criterion(parse_loss_spec("ce"))
    assert isinstance(criterion, EncouragingLoss) and criterion.bonus_scale == 0.0
    assert isinstance(build_criterion(parse_loss_spec("poly1(epsilon=2)")), PolyLoss)


def test_deferred_bonus_schedule_is_applied_by_epoch():
    cfg = parse_loss_spec("el(defer=2, schedule=linear, schedule_length=2)")
    schedule = build_schedule(cfg)
    criterion = build_criterion(cfg)
    seen = [schedule.apply(criterion, epoch) for epoch in range(5)]
    assert seen == [0.0, 0.0, 0.0, 0.5, 1.0] and criterion.bonus_scale == 1.0
    assert build_schedule(parse_loss_spec("el")) is None and build_schedule(parse_loss_spec("ce")) is None
