"""Engine overhead and recipe epoch times.

1. Overhead: the engine's training epoch (``Trainer.train_epoch``: on-device batches with per-batch normalisation,
   autocast context, gradient-norm bookkeeping, scheduler step, diagnostics accumulated on the device) against a
   bare hand-written loop (pre-normalised tensors, forward, ``F.cross_entropy``, backward, step) on the same model,
   data, batch size and optimizer. Both use plain cross-entropy, so only the loop differs; the two are
   interleaved and the medians compared (target: <= 1.05x).
2. The training-epoch time of the quick MNIST and CIFAR-10 recipes (first epoch discarded as warm-up when
   ``--recipe-epochs`` > 1).
3. ``--graph DATASET``: the same comparison for the graph task (the paper's SAGPool network on a TU dataset's
   training split, batch 128): the engine's epoch, PyG collation through its ``LoaderBatches`` included, against a
   bare loop over PyG's own ``DataLoader`` (forward, ``F.cross_entropy``, backward, step); target: <= 1.10x.
4. ``--translation``: target tokens per second of the engine's epoch on the quick Multi30k recipe's model and
   token batches (a slice of the training set) against a bare loop over the same batches (forward, per-token
   label-smoothed cross-entropy with padding ignored, backward, step); then decoding speed of the trained-for-
   nothing model (sentences/s, greedy and beam 5, batched), which depends on the model, not on its weights.
5. ``--resnet18 DATASET`` (GPU): ResNet-18 (CIFAR stem) training throughput on a CIFAR-10 array folder or
   registry name, batch 128, flips and crops on the device, with bf16 autocast and ``torch.compile`` each on and
   off; the first epoch (compilation, cuDNN autotuning) is discarded, and the 50k-image epoch time is derived
   from the measured images per second.

    python benchmarks/bench_engine.py [--device cpu|cuda] [--repeats 5] [--steps 60] [--recipes]
                                      [--graph PROTEINS] [--translation] [--resnet18 cifar10|PATH]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from encouraging import __version__, load_plugins  # noqa: E402
from encouraging.data import load_image_dataset  # noqa: E402
from encouraging.engine.batches import TensorBatches  # noqa: E402
from encouraging.engine.config import apply_overrides, load_config  # noqa: E402
from encouraging.engine.task import DataStats, Prepared, build_task  # noqa: E402
from encouraging.engine.trainer import Trainer  # noqa: E402
from encouraging.experiment.provenance import hardware  # noqa: E402
from encouraging.models import create_model  # noqa: E402

load_plugins()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(device: torch.device, repeats: int, bare: Callable[[int], Any], engine: Callable[[int], Any]
              ) -> tuple[float, float]:
    """Median seconds of ``bare(r)`` and ``engine(r)`` (an epoch each), called alternately for ``repeats`` timed
    rounds after a warm-up round."""
    times: dict[str, list[float]] = {"bare": [], "engine": []}
    for r in range(repeats + 1):
        for name, epoch in (("bare", bare), ("engine", engine)):
            _sync(device)
            start = time.perf_counter()
            epoch(r)
            _sync(device)
            if r:
                times[name].append(time.perf_counter() - start)
    return statistics.median(times["bare"]), statistics.median(times["engine"])


def bare_epoch(model: nn.Module, opt: torch.optim.Optimizer, xs: torch.Tensor, ys: torch.Tensor, batch: int) -> None:
    """The reference loop: nothing but what training needs."""
    model.train()
    for i in range(0, len(xs) - batch + 1, batch):
        loss = F.cross_entropy(model(xs[i:i + batch]), ys[i:i + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def overhead(device: torch.device, repeats: int, steps: int, model_name: str) -> dict[str, float]:
    data = load_image_dataset("mnist")
    batch = 128
    n = steps * batch
    x, y = data.x_train[:n], data.y_train[:n]
    cfg = apply_overrides(load_config(ROOT / "configs/quick/mnist.yaml"),
                          [f"--model.name={model_name}", "--optim.schedule=constant", "--train.amp=fp32"])
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, in_channels=1, image_size=28).to(device)
    batches = TensorBatches(x, y, batch, train=True, shuffle=False, mean=data.info.mean, std=data.info.std,
                            device=device)
    prepared = Prepared(model, batches, batches, DataStats(10))
    trainer = Trainer(build_task(cfg, device), prepared, nn.CrossEntropyLoss(), quiet=True)
    xs = torch.cat([bx for bx, _ in batches.epoch(0)])  # the same normalised pixels, prepared once
    ys = torch.cat([by for _, by in batches.epoch(0)])
    bare_opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bare, engine = alternate(device, repeats, lambda r: bare_epoch(model, bare_opt, xs, ys, batch),
                             trainer.train_epoch)
    return {"model": model_name, "steps": steps, "bare_ms": 1e3 * bare / steps, "engine_ms": 1e3 * engine / steps,
            "ratio": engine / bare}


def graph_overhead(device: torch.device, repeats: int, dataset: str) -> dict[str, float]:
    from torch_geometric.loader import DataLoader

    cfg = apply_overrides(load_config(ROOT / "configs/paper/proteins_sagpool.yaml"),
                          [f"--data.dataset={dataset}", f"--train.device={device}", "--train.amp=fp32"])
    torch.manual_seed(0)
    task = build_task(cfg, device)
    prepared = task.setup()
    trainer = Trainer(task, prepared, nn.CrossEntropyLoss(), quiet=True)
    graphs = prepared.train.loader.dataset
    model = prepared.model.to(device)
    bare_opt = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-4)

    def bare_epoch_graphs(epoch: int) -> None:
        model.train()
        torch.manual_seed(epoch)
        for data in DataLoader(graphs, batch_size=cfg.data.batch_size, shuffle=True):
            data = data.to(device)
            loss = F.cross_entropy(model(data), data.y)
            bare_opt.zero_grad(set_to_none=True)
            loss.backward()
            bare_opt.step()

    bare, engine = alternate(device, repeats, bare_epoch_graphs, trainer.train_epoch)
    return {"dataset": dataset, "graphs": len(graphs), "steps": len(prepared.train), "bare_ms": 1e3 * bare,
            "engine_ms": 1e3 * engine, "ratio": engine / bare}


def translation_throughput(device: torch.device, repeats: int, pairs: int) -> dict[str, float]:
    cfg = apply_overrides(load_config(ROOT / "configs/quick/multi30k.yaml"),
                          [f"--data.train_subset={pairs}", "--data.eval_subset=200", f"--train.device={device}",
                           "--train.amp=fp32", "--loss.name=ce_ls"])
    torch.manual_seed(0)
    task = build_task(cfg, device)
    prepared = task.setup()
    trainer = Trainer(task, prepared, task.build_criterion(prepared.stats), quiet=True)
    model, batches = prepared.model.to(device), prepared.train
    tokens = sum(len(t) + 1 for t in batches.targets)
    bare_opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))

    def bare(epoch: int) -> None:
        model.train()
        for inputs, labels in batches.epoch(epoch):
            logits = model(inputs)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=0,
                                   label_smoothing=0.1)
            bare_opt.zero_grad(set_to_none=True)
            loss.backward()
            bare_opt.step()

    bare_s, engine_s = alternate(device, repeats, bare, trainer.train_epoch)
    model.eval()
    test = prepared.test
    sentences = len(test.sources)
    decode = {}
    for beam in (1, 5):
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            for inputs, _ in test.epoch(0):
                model.generate(inputs, beam=beam)
        _sync(device)
        decode[beam] = sentences / (time.perf_counter() - start)
    return {"pairs": len(batches.sources), "tokens": tokens, "bare_tok_s": tokens / bare_s,
            "engine_tok_s": tokens / engine_s, "ratio": engine_s / bare_s, "greedy_sent_s": decode[1],
            "beam5_sent_s": decode[5], "decoded": sentences}


def timed_epochs(cfg, device: torch.device, epochs: int) -> tuple[Any, list[float]]:
    """Prepare the recipe's task and time ``epochs`` training epochs of the engine (seconds each)."""
    torch.manual_seed(0)
    task = build_task(cfg, device)
    prepared = task.setup()
    trainer = Trainer(task, prepared, nn.CrossEntropyLoss(), quiet=True)
    times = []
    for epoch in range(epochs):
        _sync(device)
        start = time.perf_counter()
        trainer.train_epoch(epoch)
        _sync(device)
        times.append(time.perf_counter() - start)
    return prepared, times


def recipe_epoch(path: Path, device: torch.device, epochs: int) -> dict[str, float]:
    cfg = apply_overrides(load_config(path), [f"--train.epochs={epochs}", f"--train.device={device}"])
    prepared, times = timed_epochs(cfg, device, epochs)
    kept = times[1:] if len(times) > 1 else times
    return {"recipe": cfg.name, "model": cfg.model.name, "train_examples": prepared.notes.get("train_size"),
            "epoch_s": statistics.median(kept), "steps": len(prepared.train)}


def resnet18_throughput(device: torch.device, dataset: str, amp: str, compile_model: bool,
                        epochs: int = 3) -> dict[str, float]:
    cfg = apply_overrides(load_config(ROOT / "configs/quick/cifar10.yaml"), [
        f"--data.dataset={dataset}", "--data.train_subset=0", "--model.name=resnet18_cifar", "--model.kwargs={}",
        f"--train.amp={amp}", f"--train.compile={str(compile_model).lower()}", f"--train.device={device}",
        f"--train.epochs={epochs}"])
    prepared, times = timed_epochs(cfg, device, epochs)
    images = len(prepared.train) * cfg.data.batch_size
    rate = images / statistics.median(times[1:])
    return {"amp": amp, "compile": compile_model, "images_per_s": rate, "epoch_50k_s": 50_000 / rate,
            "first_epoch_s": times[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--models", default="torchattacks_cnn,small_cnn")
    parser.add_argument("--recipes", action="store_true", help="also time the quick recipes' epochs")
    parser.add_argument("--recipe-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--graph", default=None, help="a TU dataset (PROTEINS, NCI1) for the graph-task table")
    parser.add_argument("--translation", type=int, default=0, metavar="PAIRS",
                        help="time the translation task on this many Multi30k training pairs (0: skip)")
    parser.add_argument("--resnet18", default=None, help="CIFAR-10 name or array folder for the ResNet-18 table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"machine: {hardware(device)} | torch {torch.__version__} | encouraging {__version__} | "
          f"python {platform.python_version()}")
    models = [name for name in args.models.split(",") if name]  # --models= skips the image table
    if models:
        print(f"{'model':<18}{'steps':>6}{'bare_ms':>10}{'engine_ms':>11}{'engine/bare':>13}")
    for model_name in models:
        row = overhead(device, args.repeats, args.steps, model_name)
        print(f"{row['model']:<18}{row['steps']:>6}{row['bare_ms']:>10.2f}{row['engine_ms']:>11.2f}"
              f"{row['ratio']:>12.3f}x")
    if args.recipes:
        print(f"\n{'recipe':<16}{'model':<18}{'train':>7}{'steps':>7}{'epoch_s':>9}")
        for name in ("mnist", "cifar10"):
            row = recipe_epoch(ROOT / f"configs/quick/{name}.yaml", device, args.recipe_epochs)
            print(f"{row['recipe']:<16}{row['model']:<18}{row['train_examples']:>7}{row['steps']:>7}"
                  f"{row['epoch_s']:>9.1f}")
    if args.graph:
        row = graph_overhead(device, args.repeats, args.graph)
        print(f"\ngraph task, SAGPool, {row['dataset']} training split ({row['graphs']} graphs, {row['steps']} steps)")
        print(f"{'bare_ms/epoch':>14}{'engine_ms/epoch':>16}{'engine/bare':>13}")
        print(f"{row['bare_ms']:>14.1f}{row['engine_ms']:>16.1f}{row['ratio']:>12.3f}x")
    if args.translation:
        row = translation_throughput(device, args.repeats, args.translation)
        print(f"\ntranslation, quick Multi30k model, {row['pairs']} pairs ({row['tokens']} target tokens)")
        print(f"{'bare tok/s':>11}{'engine tok/s':>14}{'engine/bare':>13}{'greedy sent/s':>15}{'beam5 sent/s':>14}")
        print(f"{row['bare_tok_s']:>11.0f}{row['engine_tok_s']:>14.0f}{row['ratio']:>12.3f}x"
              f"{row['greedy_sent_s']:>15.1f}{row['beam5_sent_s']:>14.1f}")
    if args.resnet18:
        print(f"\nResNet-18 (CIFAR stem), batch 128, {args.resnet18}")
        print(f"{'amp':<6}{'compile':>8}{'images/s':>10}{'epoch_50k_s':>13}{'first_epoch_s':>15}")
        for amp, compiled in (("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)):
            row = resnet18_throughput(device, args.resnet18, amp, compiled)
            print(f"{amp:<6}{str(compiled):>8}{row['images_per_s']:>10.0f}{row['epoch_50k_s']:>13.2f}"
                  f"{row['first_epoch_s']:>15.2f}")


if __name__ == "__main__":
    main()
