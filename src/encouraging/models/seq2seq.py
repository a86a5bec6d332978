"""Transformer encoder-decoders for translation: a fresh (randomly initialised) Marian model from Hugging Face
Transformers, configured as fairseq's ``transformer`` (post-norm, ReLU, sinusoidal positions, scaled embeddings,
one vocabulary shared by source, target and output layer), whose ``generate`` supplies greedy and beam search.

:class:`Seq2SeqTransformer` takes the :class:`~encouraging.engine.batches.Seq2SeqInputs`-like batches of the
translation task (``source``, ``attention_mask``, ``decoder_input``) and returns logits ``(N, T, V)``. Transformers
is imported when a model is built.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .registry import register_model

PAD, BOS, EOS = 0, 2, 3  # the special ids of encouraging.data.subwords


class Seq2SeqTransformer(nn.Module):
    """A Marian encoder-decoder with fairseq's transformer settings (see the module docstring)."""

    def __init__(self, vocab_size: int, *, dim: int = 512, layers: int = 6, heads: int = 4, ffn: int = 1024,
                 dropout: float = 0.3, attention_dropout: float = 0.0, max_positions: int = 1024) -> None:
        super().__init__()
        from transformers import MarianConfig, MarianMTModel

        if vocab_size <= EOS or dim % heads or min(layers, heads, ffn) < 1 or not 0 <= dropout < 1:
            raise ValueError(f"need vocab_size > {EOS}, dim divisible by heads, layers/heads/ffn >= 1 and 0 <= "
                             f"dropout < 1; got {vocab_size}, {dim}, {heads}, {layers}/{ffn}, {dropout}")
        config = MarianConfig(
            vocab_size=vocab_size, decoder_vocab_size=vocab_size, d_model=dim, encoder_layers=layers,
            decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
            encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, activation_function="relu", dropout=dropout,
            attention_dropout=attention_dropout, activation_dropout=0.0, max_position_embeddings=max_positions,
            scale_embedding=True, share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
            pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=BOS,
            forced_eos_token_id=None)
        self.model = MarianMTModel(config)

    def forward(self, inputs: Any, *, hidden: bool = False) -> Tensor:
        """Logits ``(N, T, V)``, or with ``hidden`` the decoder's last states ``(N, T, dim)``, from which
        :meth:`output_layer` gives the logits (so a loss can take them without materializing the logits)."""
        if hidden:
            return self.model.model(input_ids=inputs.source, attention_mask=inputs.attention_mask,
                                    decoder_input_ids=inputs.decoder_input).last_hidden_state
        return self.model(input_ids=inputs.source, attention_mask=inputs.attention_mask,
                          decoder_input_ids=inputs.decoder_input).logits

    def output_layer(self) -> tuple[Tensor, Tensor]:
        """``(weight (V, dim), bias (V,))``: logits = decoder states @ weight.T + bias (Marian's output layer)."""
        return self.model.lm_head.weight, self.model.final_logits_bias[0]

    def generate(self, inputs: Any, *, beam: int = 5, length_penalty: float = 1.0, max_len_a: float = 1.2,
                 max_len_b: int = 10) -> list[list[int]]:
        """Hypotheses (token ids, without BOS/EOS/padding) for each source of the batch: greedy when ``beam`` is
        1, else beam search with ``length_penalty`` (the score divided by length ** penalty); at most
        ``max_len_a * source length + max_len_b`` tokens (fairseq's rule)."""
        longest = int(inputs.attention_mask.sum(1).max())
        search = {"num_beams": beam, "length_penalty": length_penalty, "early_stopping": True} if beam > 1 else {}
        out = self.model.generate(input_ids=inputs.source, attention_mask=inputs.attention_mask, do_sample=False,
                                  max_new_tokens=int(max_len_a * longest + max_len_b), **search)
        return [[t for t in row.tolist() if t > EOS or t == 1] for row in out]  # drop pad/bos/eos, keep unk (1)


@register_model(in_channels=0, image_size=None, tags=("translation", "paper"))
def transformer_iwslt_de_en(num_classes: int = 10000, in_channels: int = 0, image_size: None = None,
                            **kwargs: Any) -> Seq2SeqTransformer:
    """fairseq's transformer_iwslt_de_en sizes: 6 + 6 layers, 512 wide, FFN 1024, 4 heads (num_classes = vocab)."""
    return Seq2SeqTransformer(num_classes, **{"dim": 512, "layers": 6, "heads": 4, "ffn": 1024, **kwargs})


@register_model(in_channels=0, image_size=None, tags=("translation", "cpu"))
def transformer_small(num_classes: int = 8000, in_channels: int = 0, image_size: None = None,
                      **kwargs: Any) -> Seq2SeqTransformer:
    """A CPU-sized transformer: 3 + 3 layers, 256 wide, FFN 512, 4 heads (num_classes = vocab)."""
    return Seq2SeqTransformer(num_classes, **{"dim": 256, "layers": 3, "heads": 4, "ffn": 512, "dropout": 0.1,
                                              **kwargs})
