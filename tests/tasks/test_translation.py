"""The translation task on a slice of Multi30k: a short run end to end, padding left out of the loss exactly,
BLEU from sacreBLEU on the decoded split, and bad settings refused."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("sentencepiece")
pytest.importorskip("sacrebleu")
pytest.importorskip("transformers")

from encouraging.engine.config import Config, apply_overrides  # noqa: E402


@pytest.fixture
def cfg(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return apply_overrides(Config(task="translation"), [
        "--name=mt", "--data.dataset=multi30k_de_en", "--data.train_subset=300", "--data.eval_subset=12",
        "--data.vocab_size=300", "--data.max_tokens=400", "--data.beam=2", "--model.name=transformer_small",
        "--model.kwargs={dim: 32, layers: 1, ffn: 64}", "--optim.name=adam", "--optim.lr=0.003",
        "--optim.schedule=inverse_sqrt", "--optim.warmup_epochs=0.5", "--train.epochs=1", "--train.threads=1"])


def test_a_short_run_trains_decodes_and_scores(cfg, tmp_path):
    from encouraging.experiment import run
    from encouraging.results import ResultsStore, table_rows

    final = run(apply_overrides(cfg, ["--loss.name=el_ls", "--loss.log_end=0.5"]), out_dir=tmp_path / "runs",
                db=tmp_path / "r.db", quiet=True)
    assert final["selection"] == "val" and 0.0 <= final["selected_test_bleu"] <= 100.0
    assert 0.0 < final["final_train_acc"] < 1.0 and final["final_test_loss"] > 0
    (row,) = table_rows(ResultsStore(tmp_path / "r.db"))
    assert "joint sentencepiece BPE, 300 pieces" in row["table_notes"] and "nrefs:1" in row["table_notes"]


def test_the_loss_leaves_padding_out_exactly(cfg):
    from encouraging.engine.batches import TokenBatches
    from encouraging.engine.task import build_task
    from encouraging.losses import EncouragingLoss

    task = build_task(cfg)
    prepared = task.setup()
    model = prepared.model.eval()  # no dropout: the padded batch and the sentences alone see the same network
    criterion = EncouragingLoss(log_end=0.5, label_smoothing=0.1, reduction="sum")
    source, target = prepared.train.sources[:3], prepared.train.targets[:3]
    batch = next(iter(TokenBatches(source, target, 10_000, train=False).epoch(0)))
    assert (batch[1] == 0).any()  # the batch has padding
    padded = task.training_step(model, batch, criterion)
    alone = sum(task.training_step(model, next(iter(TokenBatches([s], [t], 10_000, train=False).epoch(0))),
                                   criterion).loss for s, t in zip(source, target, strict=True))
    assert padded.count == sum(len(t) + 1 for t in target)
    torch.testing.assert_close(padded.loss, alone, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("loss", ["ce_ls", "el_ls"])
def test_the_fused_output_layer_gives_the_loss_gradients_and_diagnostics_of_the_logits(cfg, loss):
    from encouraging.engine.task import build_task

    plain, fused = (build_task(apply_overrides(cfg, [f"--loss.name={loss}", "--loss.log_end=0.5",
                                                     f"--model.fused_loss={on}"])) for on in (False, True))
    prepared = plain.setup()
    fused.setup()
    model = prepared.model.eval()  # no dropout: both steps see the same network
    criterion = plain.build_criterion(prepared.stats)
    batch = next(iter(prepared.train.epoch(0)))
    steps, grads = [], []
    for task in (plain, fused):
        model.zero_grad()
        step = task.training_step(model, batch, criterion)
        step.loss.backward()
        steps.append(step)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (a, b), (ga, gb) = steps, grads
    assert a.count == b.count
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)
    for name in a.sums:
        # the bonus sum is n * loss - (smoothed) CE sum: float32 rounding of the loss, times n tokens
        atol = 1e-6 * a.count * float(a.loss) if name == "train_bonus" else 1e-4
        torch.testing.assert_close(b.sums[name], a.sums[name], rtol=1e-5, atol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")
    assert ga.keys() == gb.keys() and "model.model.shared.weight" in ga  # the tied embedding and output layer
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_bleu_is_sacrebleus_on_the_decoded_hypotheses(cfg):
    import sacrebleu

    from encouraging.engine.task import build_task

    task = build_task(cfg)
    prepared = task.setup()
    model = prepared.model.eval()
    metrics = task.evaluate(model, prepared.test)
    decoded = {}
    with torch.no_grad():
        for inputs, _ in prepared.test.epoch(0):
            for i, h in zip(inputs.index, model.generate(inputs, beam=2), strict=True):
                decoded[int(i)] = task.vocab.decode(h)
    references = task._splits[id(prepared.test)].references
    hyps = [decoded[i] for i in range(len(references))]
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [references]).score)
    assert sacrebleu.corpus_bleu(references, [references]).score == pytest.approx(100.0)


def test_bleu_of_known_pairs_matches_the_hand_computed_value():
    from encouraging.tasks.translation import corpus_bleu

    # precisions 5/6, 3/5, 2/4, 1/3 and equal lengths (BP = 1): 100 * (5/6 * 3/5 * 2/4 * 1/3) ** (1/4)
    hand = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"], tokenized=False) == {
        "bleu": pytest.approx(hand, abs=1e-6)}
    # every n-gram right, 4 of 5 words: BLEU = 100 * BP = 100 * exp(1 - 5/4)
    short = corpus_bleu(["a b c d"], ["a b c d e"], tokenized=True)
    assert short == {"bleu": pytest.approx(100 * math.exp(-0.25)), "bleu_tok": pytest.approx(100 * math.exp(-0.25))}
    # tokenized BLEU splits on spaces only: "dog ." is two tokens as written, and "dog." one
    apart = corpus_bleu(["a big dog ."], ["a big dog."], tokenized=True)
    assert apart["bleu"] == pytest.approx(100.0) and apart["bleu_tok"] < 100.0


def test_bad_translation_settings_are_refused(cfg, tmp_path):
    from encouraging.experiment import run
    from encouraging.experiment.runner import ConfigError

    with pytest.raises(ConfigError, match="loss.name must be one of .* for task translation"):
        run(apply_overrides(cfg, ["--loss.name=ldam"]), out_dir=tmp_path, db=None)
    with pytest.raises(ConfigError, match="data.dataset must be one of"):
        run(apply_overrides(cfg, ["--data.dataset=wmt14"]), out_dir=tmp_path, db=None)
    with pytest.raises(ConfigError, match="model.fused_loss computes the encouraging loss .* got 'focal'"):
        run(apply_overrides(cfg, ["--loss.name=focal", "--model.fused_loss=true"]), out_dir=tmp_path, db=None)
    with pytest.raises(ConfigError, match="inverse_sqrt needs optim.warmup_epochs > 0"):
        run(apply_overrides(cfg, ["--optim.warmup_epochs=0"]), out_dir=tmp_path, db=None)


def test_translate_decodes_new_text_with_the_last_or_averaged_weights(cfg, tmp_path, capsys):
    from encouraging.cli import main
    from encouraging.experiment import run, run_dir_for
    from encouraging.experiment.translate import translate

    trained = apply_overrides(cfg, ["--train.epochs=2", "--train.average_last=2"])
    final = run(trained, out_dir=tmp_path / "runs", db=None, quiet=True)
    assert final["averaged_epochs"] == 2 and "averaged_test_bleu" in final
    where = run_dir_for(trained, tmp_path / "runs")
    sentences = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest."]
    (tmp_path / "in.de").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    assert main(["translate", str(where), "--input", str(tmp_path / "in.de"), "--beam", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == translate(where, sentences, beam=1)  # one line per source line, in order
    averaged = translate(where, sentences, beam=1, weights="averaged")
    assert len(averaged) == 3 and all(isinstance(t, str) for t in averaged)
    assert main(["translate", str(where), "--input", str(tmp_path / "in.de"), "--beam", "0"]) == 2
    assert "--beam must be >= 1" in capsys.readouterr().err


def test_a_folder_of_files_is_a_corpus(cfg, tmp_path, data_root):
    """Any folder of aligned files trains like a named corpus; a missing file or bad languages are named."""
    import gzip

    from encouraging.experiment import run
    from encouraging.experiment.runner import ConfigError

    folder = tmp_path / "pairs"
    folder.mkdir()
    for split, stem in (("train", "train"), ("val", "val"), ("test_2016_flickr", "test")):
        for lang in ("de", "en"):
            with gzip.open(data_root / "multi30k" / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
                lines = [next(f) for _ in range(300 if stem == "train" else 12)]
            (folder / f"{stem}.{lang}").write_text("".join(lines), encoding="utf-8")
    own = apply_overrides(cfg, [f"--data.dataset={folder}", "--data.langs=de-en", "--name=mt-folder"])
    final = run(own, out_dir=tmp_path / "runs", db=None, quiet=True)
    assert final["epochs_trained"] == 1 and 0.0 <= final["final_test_bleu"] <= 100.0
    with pytest.raises(ConfigError, match="data.langs must be '<source>-<target>'"):
        run(apply_overrides(own, ["--data.langs=de"]), out_dir=tmp_path / "runs", db=None)
    (folder / "test.en").unlink()
    with pytest.raises(FileNotFoundError, match=r"test.en\[.gz\] is missing beside its pair"):
        run(own, out_dir=tmp_path / "runs2", db=None, quiet=True)
