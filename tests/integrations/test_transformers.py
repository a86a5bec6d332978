"""The Transformers integration, offline on tiny randomly initialized models: the patched causal LM's fused loss
equals the loss of its logits (value and gradients; GPT-2's tied head too), ``num_items_in_batch`` reproduces a
full batch under gradient accumulation, ``bonus_scale=0`` equals transformers' stock loss, classification heads,
``Trainer`` with ``compute_loss_func`` and with a patched model, unpatching, and the refusals."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
)

from encouraging import encouraging_loss  # noqa: E402
from encouraging.integrations.transformers import (  # noqa: E402
    causal_lm_loss,
    compute_loss_func,
    patch_model,
    unpatch_model,
)

VOCAB = 97


def _llama(cls=LlamaForCausalLM, **extra):
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, num_labels=3,
                         pad_token_id=0, **extra)
    return cls(config).double().eval()  # eval: no dropout, so two forwards agree


def _gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=64,
                                      bos_token_id=1, eos_token_id=1)).double().eval()


def _batch(b=3, t=11):
    ids = torch.randint(1, VOCAB, (b, t))
    labels = ids.clone()
    labels[0, :4] = -100  # a prompt that is not trained on
    return ids, labels


def _grads(model, loss):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("make", [_llama, _gpt2], ids=["llama", "gpt2-tied"])
@pytest.mark.parametrize("options", [dict(log_end=0.75), dict(log_end=1.0, label_smoothing=0.1)],
                         ids=["le0.75", "le1-smooth"])
def test_fused_causal_lm_equals_loss_of_logits(make, options):
    model = make()
    ids, labels = _batch()
    expected = causal_lm_loss(model(ids).logits, labels, **options)
    expected_grads = _grads(model, expected)
    patch_model(model, chunk_size=5, **options)
    out = model(ids, labels=labels)
    assert out.logits is None  # never materialized
    torch.testing.assert_close(out.loss, expected)
    for g, e in zip(_grads(model, out.loss), expected_grads, strict=True):
        torch.testing.assert_close(g, e)


def test_bonus_scale_zero_is_stock_loss():
    model = _llama()
    ids, labels = _batch()
    stock = model(ids, labels=labels).loss  # transformers computes it in float32 (logits.float())
    patch_model(model, bonus_scale=0.0)
    torch.testing.assert_close(model(ids, labels=labels).loss.float(), stock)
    fn = compute_loss_func("causal_lm", bonus_scale=0.0)
    unpatch_model(model)
    torch.testing.assert_close(fn(model(ids), labels).float(), stock)


def test_num_items_in_batch_gradient_accumulation():
    # Two micro-batches, each summed and divided by the token count of the whole batch, add up to the full
    # batch's mean: Trainer's convention, as transformers' ForCausalLMLoss.
    model = patch_model(_llama(), log_end=0.75)
    ids, labels = _batch(b=4)
    full = model(ids, labels=labels).loss
    num_items = (labels[:, 1:] != -100).sum()
    parts = [model(ids[i:i + 2], labels=labels[i:i + 2], num_items_in_batch=num_items).loss for i in (0, 2)]
    torch.testing.assert_close(parts[0] + parts[1], full)
    fn = compute_loss_func("causal_lm", log_end=0.75)
    unpatch_model(model)
    micro = [fn(model(ids[i:i + 2]), labels[i:i + 2], num_items_in_batch=num_items) for i in (0, 2)]
    torch.testing.assert_close(micro[0] + micro[1], full)


@pytest.mark.parametrize("cls", [LlamaForSequenceClassification, LlamaForTokenClassification])
def test_classification_heads(cls):
    model = _llama(cls)
    ids, _ = _batch()
    labels = torch.randint(3, (3,) if cls is LlamaForSequenceClassification else (3, 11))
    stock = model(ids, labels=labels).loss
    patch_model(model, log_end=1.0)
    out = model(ids, labels=labels)
    torch.testing.assert_close(out.loss, encouraging_loss(out.logits.reshape(-1, 3), labels.reshape(-1), log_end=1.0))
    assert not torch.allclose(out.loss.double(), stock.double())  # the bonus changed it
    unpatch_model(model)
    torch.testing.assert_close(model(ids, labels=labels).loss, stock)


def test_multi_label_uses_binary_el():
    model = _llama(LlamaForSequenceClassification)
    model.config.problem_type = "multi_label_classification"
    ids, _ = _batch()
    labels = torch.randint(2, (3, 3)).double()
    patch_model(model, log_end=0.75, bonus_scale=0.0)
    out = model(ids, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels))


def test_generation_unchanged_and_unpatch():
    model = _llama()
    ids, labels = _batch()
    logits = model(ids).logits
    stock = model(ids, labels=labels).loss
    patch_model(model)
    torch.testing.assert_close(model(ids).logits, logits)  # no labels: the original forward
    unpatch_model(model)
    assert "forward" not in model.__dict__
    torch.testing.assert_close(model(ids, labels=labels).loss, stock)


def test_trainer_runs_with_patch_and_with_compute_loss_func(tmp_path):
    pytest.importorskip("accelerate")  # Trainer needs it
    from transformers import Trainer, TrainingArguments

    ids, labels = _batch(b=8, t=9)
    data = [{"input_ids": i, "labels": label} for i, label in zip(ids, labels, strict=True)]
    losses = {}
    for name in ("patch", "compute_loss_func"):
        torch.manual_seed(0)
        model = _llama().float()
        kwargs = {}
        if name == "patch":
            patch_model(model, log_end=0.75)
        else:
            kwargs["compute_loss_func"] = compute_loss_func("causal_lm", log_end=0.75)
        args = TrainingArguments(output_dir=str(tmp_path / name), per_device_train_batch_size=2,
                                 gradient_accumulation_steps=2, max_steps=2, learning_rate=1e-2, report_to=[],
                                 use_cpu=True, logging_steps=1, save_strategy="no", disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=data, **kwargs)
        trainer.train()
        losses[name] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses["patch"]) == 2
    torch.testing.assert_close(torch.tensor(losses["patch"]), torch.tensor(losses["compute_loss_func"]),
                               rtol=1e-4, atol=1e-4)


def test_refusals():
    with pytest.raises(ValueError, match="patch_model supports"):
        patch_model(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        model = _llama()
        model.config.final_logit_softcapping = 30.0
        patch_model(model)
    with pytest.raises(ValueError, match="fused path only"):
        patch_model(_llama(), fused=False, chunk_size=8)
    with pytest.raises(ValueError, match="task must be one of"):
        compute_loss_func("masked_lm")
