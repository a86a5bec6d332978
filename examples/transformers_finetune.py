"""Fine-tune a small causal LM with the encouraging loss through Hugging Face Transformers, offline on the CPU.

The model is a randomly initialized tiny Llama with a realistic vocabulary (32000 by default), so the
(tokens x vocabulary) logits dominate the memory, as they do when fine-tuning real LLMs. ``--loss stock`` trains
with transformers' own cross-entropy, ``--loss el`` with ``patch_model`` (fused chunked EL: the logits never
exist), ``--loss el-logits`` with ``Trainer(compute_loss_func=...)`` on the materialized logits.
``--compare`` runs each in a fresh process and prints the peak memory (ru_maxrss) and time per step.

Run: ``python examples/transformers_finetune.py --compare`` (or ``--loss el --steps 20``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def train(loss: str, vocab: int, seq_len: int, batch: int, steps: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from encouraging.integrations.transformers import compute_loss_func, patch_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=seq_len)
    model = LlamaForCausalLM(config)
    loss_fn = None
    if loss == "el":
        patch_model(model, log_end=0.75)
    elif loss == "el-logits":
        loss_fn = compute_loss_func("causal_lm", log_end=0.75)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.randint(vocab, (steps, batch, seq_len))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, losses = [], []
    for ids in data:
        start = time.perf_counter()
        out = model(ids, labels=ids)
        value = loss_fn(out, ids) if loss_fn else out.loss
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(value.item())
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {"loss": loss, "first_loss": losses[0], "last_loss": losses[-1], "peak_MiB": peak,
            "s_per_step": sorted(times)[len(times) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loss", choices=("stock", "el", "el-logits"), default="el")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--compare", action="store_true", help="run every loss in its own process, print a table")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.compare:
        result = train(args.loss, args.vocab, args.seq_len, args.batch, args.steps)
        print(json.dumps(result) if args.json else result)
        return
    print(f"tiny Llama (2 layers, hidden 128), vocab {args.vocab}, batch {args.batch} x {args.seq_len} tokens, "
          f"{args.steps} AdamW steps, 1 thread; peak = rise of ru_maxrss during training")
    print(f"{'loss':<10} {'peak_MiB':>9} {'vs_stock':>8} {'s/step':>7} {'first':>7} {'last':>7}")
    stock = None
    for loss in ("stock", "el-logits", "el"):
        cmd = [sys.executable, __file__, "--loss", loss, "--vocab", str(args.vocab), "--seq-len", str(args.seq_len),
               "--batch", str(args.batch), "--steps", str(args.steps), "--json"]
        row = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        stock = stock or row["peak_MiB"]
        print(f"{loss:<10} {row['peak_MiB']:9.0f} {row['peak_MiB'] / stock:7.2f}x {row['s_per_step']:7.2f} "
              f"{row['first_loss']:7.3f} {row['last_loss']:7.3f}", flush=True)


if __name__ == "__main__":
    main()
