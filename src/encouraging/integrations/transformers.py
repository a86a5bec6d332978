r"""Hugging Face Transformers: the encouraging loss for ``Trainer`` and for a model's own loss.

Two entry points (``pip install encouraging[transformers]``):

* :func:`compute_loss_func` builds a ``compute_loss_func`` for ``transformers.Trainer``: the loss from the model's
  logits, with ``Trainer``'s gradient-accumulation convention (summed over tokens, divided by
  ``num_items_in_batch``, as ``transformers.loss.loss_utils.ForCausalLMLoss`` does).
* :func:`patch_model` makes a model's own ``loss`` the encouraging loss, for an existing instance:

  - ``*ForCausalLM``: ``forward`` is replaced by one that runs the base model and computes the loss from the last
    hidden states and ``lm_head.weight`` with :func:`~encouraging.losses.linear_encouraging_loss` (labels
    shifted by one, ``-100`` ignored), so the (tokens x vocabulary) logits are never materialized; ``logits`` is
    then None in the output. Without labels the original forward runs (generation is unchanged).
  - ``*ForSequenceClassification`` / ``*ForTokenClassification``: ``model.loss_function`` (the hook transformers
    itself dispatches through) is replaced; multi-label sequence classification uses
    :func:`~encouraging.losses.binary_encouraging_loss`, regression keeps transformers' MSE.

Every function takes the encouraging-loss options of :func:`~encouraging.losses.encouraging_loss` as keywords
(``log_end``, ``bonus_scale``, ``label_smoothing``, ...).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..losses import binary_encouraging_loss, encouraging_loss, linear_encouraging_loss

IGNORE_INDEX = -100
TASKS = ("causal_lm", "sequence_classification", "token_classification")


def _reduce(total_or_mean: Tensor, num_items_in_batch) -> Tensor:
    """Trainer's convention: with ``num_items_in_batch`` the summed loss is divided by it."""
    if num_items_in_batch is None:
        return total_or_mean
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total_or_mean.device)
    return total_or_mean / num_items_in_batch


def _upcast(logits: Tensor) -> Tensor:
    """Half precision logits are upcast to float32 (as transformers' losses do); float64 stays float64."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _shifted(labels: Tensor, ignore_index: int) -> Tensor:
    """Labels for next-token prediction: position t predicts token t + 1; the last position is ignored."""
    return F.pad(labels, (0, 1), value=ignore_index)[..., 1:].contiguous()


def causal_lm_loss(logits: Tensor, labels: Tensor, num_items_in_batch=None, ignore_index: int = IGNORE_INDEX,
                   shift_labels: Tensor | None = None, **options) -> Tensor:
    """EL of ``(B, T, V)`` logits for next-token prediction, with ``ForCausalLMLoss``'s label shift, upcast and
    ``num_items_in_batch`` convention."""
    target = _shifted(labels, ignore_index) if shift_labels is None else shift_labels
    target = target.reshape(-1).to(logits.device)
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = encouraging_loss(_upcast(logits).reshape(-1, logits.shape[-1]), target, ignore_index=ignore_index,
                            reduction=reduction, **options)
    return _reduce(loss, num_items_in_batch)


def classification_loss(logits: Tensor, labels: Tensor, num_items_in_batch=None,
                        ignore_index: int = IGNORE_INDEX, **options) -> Tensor:
    """EL of ``(..., C)`` logits against class indices ``(...)`` (sequence or token classification)."""
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = encouraging_loss(_upcast(logits).reshape(-1, logits.shape[-1]), labels.reshape(-1).to(logits.device),
                            ignore_index=ignore_index, reduction=reduction, **options)
    return _reduce(loss, num_items_in_batch)


def compute_loss_func(task: str = "causal_lm", **options):
    """A ``compute_loss_func(outputs, labels, num_items_in_batch=None)`` for ``transformers.Trainer``.

    ``task``: ``'causal_lm'`` (labels shifted by one), ``'sequence_classification'`` or
    ``'token_classification'``. ``options`` go to :func:`~encouraging.losses.encouraging_loss`.

    Example:
        >>> trainer = Trainer(model, args, train_dataset=ds, compute_loss_func=compute_loss_func(log_end=0.75))
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    loss_fn = causal_lm_loss if task == "causal_lm" else classification_loss

    def compute_loss(outputs, labels: Tensor, num_items_in_batch=None) -> Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        if logits is None:
            raise ValueError("compute_loss_func needs the model's logits; a model patched with patch_model computes "
                             "its own loss without them: use one or the other")
        return loss_fn(logits, labels, num_items_in_batch, **options)

    return compute_loss


# ------------------------------------------------------------------------------------------------ patching


def _model_task(model) -> str:
    name = type(model).__name__
    for suffix, task in (("ForCausalLM", "causal_lm"), ("LMHeadModel", "causal_lm"),
                         ("ForSequenceClassification", "sequence_classification"),
                         ("ForTokenClassification", "token_classification")):
        if name.endswith(suffix):
            return task
    raise ValueError(f"patch_model supports *ForCausalLM / *LMHeadModel, *ForSequenceClassification and "
                     f"*ForTokenClassification models, got {name}")


def _check_plain_head(model) -> None:
    """The fused path computes ``hidden @ lm_head.weight.T``: refuse heads that transform the logits further."""
    config = model.config
    for attr, neutral in (("final_logit_softcapping", None), ("logit_scale", 1.0), ("logits_scaling", 1.0)):
        value = getattr(config, attr, neutral)
        if value is not None and value != neutral:
            raise ValueError(f"{type(model).__name__} has config.{attr}={value}: the fused path computes plain "
                             f"hidden @ lm_head.weight.T logits; patch with fused=False")
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(f"the fused path needs an nn.Linear output layer, got {type(head).__name__}; patch with "
                         f"fused=False")


def _fused_causal_forward(options: dict, original):
    # Named arguments, not *args: Trainer keeps only the dataset columns that forward's signature names.
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels: Tensor | None = None, use_cache=None, logits_to_keep=0,
                num_items_in_batch=None, shift_labels=None, **kwargs):
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
        if labels is None and shift_labels is None:
            return original(logits_to_keep=logits_to_keep, **inputs)
        from transformers.modeling_outputs import CausalLMOutputWithPast

        outputs = self.base_model(**inputs)
        hidden = outputs[0]
        head = self.get_output_embeddings()
        target = _shifted(labels, IGNORE_INDEX) if shift_labels is None else shift_labels
        reduction = "sum" if num_items_in_batch is not None else "mean"
        loss = linear_encouraging_loss(hidden, head.weight, target.to(hidden.device), head.bias,
                                       reduction=reduction, **options)
        return CausalLMOutputWithPast(loss=_reduce(loss, num_items_in_batch), logits=None,
                                      past_key_values=getattr(outputs, "past_key_values", None),
                                      hidden_states=getattr(outputs, "hidden_states", None),
                                      attentions=getattr(outputs, "attentions", None))

    return forward


def _classification_loss_function(task: str, options: dict, original):
    if task == "token_classification":  # called as loss_function(logits, labels, config)
        def token_loss(logits: Tensor, labels: Tensor, config=None, num_items_in_batch=None, **kwargs) -> Tensor:
            return classification_loss(logits, labels, num_items_in_batch, **options)

        return token_loss

    def sequence_loss(labels: Tensor, pooled_logits: Tensor, config, num_items_in_batch=None, **kwargs) -> Tensor:
        num_labels = config.num_labels
        if config.problem_type is None:  # transformers' own rule, set on the config as it does
            if num_labels == 1:
                config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                config.problem_type = "single_label_classification"
            else:
                config.problem_type = "multi_label_classification"
        if config.problem_type == "single_label_classification":
            return classification_loss(pooled_logits, labels, num_items_in_batch, **options)
        if config.problem_type == "multi_label_classification":
            binary = {k: v for k, v in options.items() if k in ("log_end", "bonus_scale", "bonus", "gamma",
                                                                 "bonus_start")}
            return binary_encouraging_loss(pooled_logits, labels.to(pooled_logits.dtype), **binary)
        return original(labels=labels, pooled_logits=pooled_logits, config=config, **kwargs)

    return sequence_loss


def patch_model(model, *, fused: bool = True, **options: Any):
    """Make ``model``'s own loss the encouraging loss (in place; returns the model). See the module docstring.

    ``fused`` (causal LMs): compute the loss from the hidden states in chunks, never materializing the logits
    (``logits`` is None in the output when labels are given). ``fused=False`` keeps the model's forward and only
    replaces its ``loss_function`` (logits materialized, as stock). ``options``: keywords of
    :func:`~encouraging.losses.encouraging_loss` (and ``chunk_size`` / ``impl`` of the fused path).
    :func:`unpatch_model` undoes it.

    Example:
        >>> model = AutoModelForCausalLM.from_pretrained(name)
        >>> patch_model(model, log_end=0.75)   # model(input_ids, labels=labels).loss is now EL
    """
    task = _model_task(model)
    if hasattr(model, "_encouraging_patch"):
        unpatch_model(model)
    saved = {"forward": model.__dict__.get("forward"), "loss_function": model.__dict__.get("_loss_function")}
    if task == "causal_lm" and fused:
        _check_plain_head(model)
        model.forward = types.MethodType(_fused_causal_forward(options, model.forward), model)
    elif task == "causal_lm":
        linear_only = {k for k in ("chunk_size", "impl") if k in options}
        if linear_only:
            raise ValueError(f"{sorted(linear_only)} apply to the fused path only (fused=True)")

        def causal_loss_function(logits, labels, vocab_size=None, num_items_in_batch=None, ignore_index=IGNORE_INDEX,
                                 shift_labels=None, **kwargs):
            return causal_lm_loss(logits, labels, num_items_in_batch, ignore_index, shift_labels, **options)

        model.loss_function = causal_loss_function
    else:
        model.loss_function = _classification_loss_function(task, options, model.loss_function)
    model._encouraging_patch = saved
    return model


def unpatch_model(model):
    """Restore what :func:`patch_model` replaced; returns the model."""
    saved = model.__dict__.pop("_encouraging_patch", None)
    if saved is None:
        return model
    for name, attr in (("forward", "forward"), ("loss_function", "_loss_function")):
        model.__dict__.pop(attr, None)
        if saved[name] is not None:
            model.__dict__[attr] = saved[name]
    return model
