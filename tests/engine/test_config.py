from __future__ import annotations

import pytest

from encouraging.engine.config import Config, apply_overrides, config_hash, load_config, save_config


def test_overrides_keep_types_and_reject_unknown_keys():
    cfg = apply_overrides(Config(), ["--optim.lr=0.05", "--train.epochs=3", "--optim.milestones=[5, 8]",
                                     "--model.kwargs={width: 32}", "--data.root=/x", "--loss.log_end=1"])
    assert cfg.optim.lr == 0.05 and cfg.train.epochs == 3 and cfg.optim.milestones == [5, 8]
    assert cfg.model.kwargs == {"width": 32} and cfg.data.root == "/x"
    assert isinstance(cfg.loss.log_end, float) and cfg.loss.log_end == 1.0
    with pytest.raises(ValueError, match=r"unknown config key 'optim.lrr'.*optim.lr"):
        apply_overrides(cfg, ["--optim.lrr=1"])
    with pytest.raises(ValueError, match=r"unknown config section 'foo'.*data"):
        apply_overrides(cfg, ["--foo.bar=1"])
    with pytest.raises(TypeError, match="train.epochs.*int"):
        apply_overrides(cfg, ["--train.epochs=1.5"])
    with pytest.raises(TypeError, match="optim.lr.*float"):
        apply_overrides(cfg, ["--optim.lr=fast"])
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides(cfg, ["--optim.lr"])


def test_hash_ignores_seed_and_locations_but_not_the_recipe():
    base = Config()
    same = apply_overrides(base, ["--train.seed=7", "--data.root=/elsewhere", "--train.device=cpu"])
    other = apply_overrides(base, ["--loss.log_end=0.5"])
    assert config_hash(base) == config_hash(same)
    assert config_hash(base) != config_hash(other)


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(Config(), ["--name=rt", "--optim.milestones=[3]", "--loss.name=el"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg and config_hash(again) == config_hash(cfg)
    (tmp_path / "bad.yaml").write_text("optim: {learning_rate: 1}\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_every_shipped_config_loads_and_passes_the_checks(monkeypatch):
    from pathlib import Path

    from encouraging.engine.checks import config_problems

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # the cRT recipes name their stage-1 recipes relative to the checkout
    configs = sorted((repo / "configs").rglob("*.yaml"))
    assert configs, "no configs found"
    for path in configs:
        cfg = load_config(path)
        assert cfg.name != "unnamed", path
        assert config_problems(cfg) == [], path


def test_string_fields_take_the_override_text_as_written():
    cfg = apply_overrides(Config(), ["--train.amp=fp32", "--data.dataset=off", "--data.root=null", "--name=123"])
    assert cfg.train.amp == "fp32" and cfg.data.dataset == "off" and cfg.data.root is None and cfg.name == "123"


def test_float_fields_take_exponents_without_a_dot(tmp_path):
    """YAML 1.1 reads ``1e-5`` as a string; a float field still takes it, from the command line and from a file."""
    assert apply_overrides(Config(), ["--loss.bonus_floor=1e-5"]).loss.bonus_floor == 1e-5
    path = tmp_path / "floor.yaml"
    path.write_text("name: x\nloss: {bonus_floor: 1e-5, log_end: 1}\noptim: {lr: 3e-4}\n")
    cfg = load_config(path)
    assert cfg.loss.bonus_floor == 1e-5 and cfg.optim.lr == 3e-4 and cfg.loss.log_end == 1.0
