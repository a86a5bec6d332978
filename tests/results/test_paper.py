"""The paper's numbers: the values themselves (paper.md §5) and the lookup rules."""

from __future__ import annotations

import pytest

from encouraging.results import PAPER_NUMBERS, list_paper_numbers, model_family, paper_number
from encouraging.results.paper import canonical_dataset, canonical_loss


@pytest.mark.parametrize(
    ("dataset", "model", "loss", "log_end", "kw", "expected"),
    [
        # §5.1 main table (mean ± std)
        ("mnist", "mnistnet", "ce", None, {}, "99.42 ± 0.06"),
        ("MNIST", "lsoftmax_mnistnet", "el", 1.0, {}, "99.56 ± 0.05"),
        ("cifar10", "resnet50", "el", 0.75, {}, "92.97 ± 0.42"),
        ("CIFAR-100", "efficientnet_b0", "ce", None, {}, "76.22 ± 0.37"),
        ("imagenet", "resnet50", "el", 0.75, {}, "76.43 ± 0.15"),
        ("imagenet", "efficientnet_b0", "el", 0.75, {"label_smoothing": 0.1}, "78.28 ± 0.13"),
        ("proteins", "sagpool", "el", 0.5, {}, "72.76 ± 0.18"),
        ("NCI1", "sagpool_gcn", "ce", None, {}, "70.53 ± 0.28"),
        ("iwslt14_de_en", "transformer", "el", 0.5, {"label_smoothing": 0.1}, "35.50 ± 0.11"),
        ("iwslt17-fr-en", "transformer", "ce", None, {"label_smoothing": 0.1}, "37.10 ± 0.06"),
        # §5.2 LE sweep (read off the figure: no std)
        ("mnist", "mnistnet", "el", 0.75, {}, "99.50"),
        ("cifar10", "resnet50", "el", 0.5, {}, "93.03"),
        ("nci1", "sagpool", "el", 1.0, {}, "70.38"),
        ("cifar10", "efficientnet_b0", "el", 0.75, {}, "94.14"),  # the sweep, not the main table's 94.24
        # §5.3 learning-rate table
        ("cifar10", "resnet50", "el", 1.0, {}, "92.74 ± 0.38"),
        ("cifar100", "resnet50", "el", 1.0, {"lr_factor": 0.5}, "76.37 ± 0.29"),
        ("cifar100", "resnet50", "ce", None, {"lr_factor": 2.0}, "73.57 ± 0.66"),
        # §5.10 label smoothing
        ("mnist", "mnistnet", "ce", None, {"label_smoothing": 0.1}, "99.54 ± 0.04"),
        ("mnist", "mnistnet", "el", 1.0, {"label_smoothing": 0.1}, "99.63 ± 0.04"),
        ("iwslt14_de_en", "transformer", "ce", None, {}, "34.03 ± 0.06"),
        ("iwslt17_fr_en", "transformer", "el", None, {}, "37.36 ± 0.08"),
        # §5.7 OOD, §5.8 robustness
        ("mnist_vs_fashion_mnist", "mnistnet", "el", None, {"metric": "auroc"}, "98.04"),
        ("mnist-vs-fashion-mnist", "mnistnet", "ce", None, {"metric": "fpr95"}, "20.92"),
        ("imagenet_vs_inaturalist2018", "resnet50", "el", None, {"metric": "fpr95"}, "71.86"),
        ("mnist", "attack_cnn", "ce", None, {"metric": "fgsm_linf@0.2"}, "44.22"),
        ("mnist", "attack_cnn", "el", 1.0, {"metric": "pgd_linf@0.3"}, "11.21"),
        ("mnist", "attack_cnn", "el", None, {}, "99.04"),
    ],
)
def test_lookup_returns_the_papers_number(dataset, model, loss, log_end, kw, expected):
    entry = paper_number(dataset, model, loss, log_end, **kw)
    assert entry is not None
    assert entry.format() == expected


def test_headline_el_is_the_main_tables_whatever_its_le():
    assert paper_number("cifar10", "efficientnet_b0", "el").format() == "94.24 ± 0.17"
    assert paper_number("cifar100", "resnet50", "el").format() == "75.80 ± 0.09"
    assert "UNVERIFIED" in paper_number("cifar10", "efficientnet_b0", "el").note
    assert paper_number("mnist", "mnistnet", "el").log_end == 1.0


def test_lookup_returns_the_numbers_the_report_sections_show():
    """The OOD (§5.7) and L∞ robustness (§5.8) numbers the evaluation sections print beside ours."""
    ood = {(loss, m): paper_number("mnist_vs_fashion_mnist", "mnistnet", loss, metric=m).mean
           for loss in ("ce", "el") for m in ("auroc", "fpr95")}
    assert ood == {("ce", "auroc"): 95.68, ("ce", "fpr95"): 20.92, ("el", "auroc"): 98.04, ("el", "fpr95"): 8.69}
    curves = {
        ("fgsm_linf", "ce"): (98.69, 94.43, 84.21, 64.80, 44.22, 31.15, 21.72),
        ("fgsm_linf", "el"): (99.04, 96.34, 91.09, 79.68, 63.00, 46.50, 34.80),
        ("pgd_linf", "ce"): (98.69, 93.69, 76.52, 39.69, 13.34, 2.92, 0.53),
        ("pgd_linf", "el"): (99.04, 95.07, 81.32, 54.18, 30.25, 18.12, 11.21),
    }
    for (attack, loss), values in curves.items():
        found = [paper_number("mnist", "attack_cnn", loss, metric=f"{attack}@{eps:g}").mean
                 for eps in (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)]
        assert found == list(values)
        assert len(list_paper_numbers(dataset="mnist", family="attack_cnn", loss=loss, metric=f"{attack}@0.1")) == 1


@pytest.mark.parametrize(
    ("args", "kw"),
    [
        (("mnist", "mnistnet", "focal"), {}),  # a loss the paper did not run on MNIST
        (("mnist_lt", "cnn", "ce"), {}),  # long-tailed MNIST is not MNIST
        (("multi30k", "transformer", "ce"), {}),
        (("mnist", "mnistnet", "el", 0.6), {}),  # an LE the paper did not try
        (("cifar10", "resnet50", "ce"), {"label_smoothing": 0.1}),  # no CE + LS number for CIFAR
        (("imagenet", "efficientnet_b0", "ce"), {}),  # the paper's EfficientNet CE is label-smoothed
        (("mnist", "small_cnn", "ce"), {"exact_model": True}),
        (("mnist", "mnistnet", "ce"), {"metric": "auroc"}),
    ],
)
def test_lookup_returns_none_without_a_comparable_number(args, kw):
    assert paper_number(*args, **kw) is None


def test_other_models_get_the_papers_number_flagged_as_another_model():
    ours = paper_number("mnist", "small_cnn", "ce")
    assert ours.format() == "99.42 ± 0.06" and ours.same_model is False
    assert "a different model from ours" in ours.describe()
    assert "paper (their recipe)" in ours.describe() and "MNISTNet" in ours.describe()
    r18 = paper_number("cifar10", "resnet18", "ce")
    assert r18.family == "resnet50" and not r18.same_model and "ResNet-50" in r18.model
    assert paper_number("mnist", "mnistnet", "ce").same_model


def test_model_family_and_aliases():
    assert model_family("resnet50") == ("resnet50", True)
    assert model_family("ResNet-18") == ("resnet50", False)
    assert model_family("efficientnet_b0") == ("efficientnet_b0", True)
    assert model_family("gin", "proteins") == ("sagpool_gcn", False)
    assert model_family("tiny_mlp", "mnist") == ("mnistnet", False)
    assert model_family("tiny_mlp", "multi30k") == (None, False)
    assert canonical_dataset("CIFAR-10") == "cifar10" and canonical_dataset("cifar10_lt") is None
    assert canonical_loss("cross_entropy") == "ce" and canonical_loss("EncouragingLoss") == "el"
    assert canonical_loss("ce_ls") == "ce" and canonical_loss("el_ls") == "el"
    assert canonical_loss("poly1") is None


def test_table_is_consistent():
    assert len(PAPER_NUMBERS) == len({e.key for e in PAPER_NUMBERS.values()})
    for key, e in PAPER_NUMBERS.items():
        assert key == (e.dataset, e.family, e.setting, e.metric)
        assert e.model and e.recipe and e.source.startswith("paper.md §")
        assert e.loss in ("ce", "el") and (e.loss == "el" or e.log_end is None)
        assert 0.0 <= e.mean <= 100.0 and (e.std is None or 0.0 < e.std < 2.0)
    # every main-table pair of §5.1 is there: 11 settings x (CE, EL)
    main = [e for e in PAPER_NUMBERS.values() if e.source.startswith("paper.md §5.1 ") and e.metric in ("top1", "bleu")]
    assert len(main) == 2 * 11 - 1  # CIFAR-100 ResNet-50's EL comes from the LR table (same run, same value)
    assert len(list_paper_numbers(dataset="mnist", family="attack_cnn", metric="fgsm_linf@0.3")) == 2
    assert list_paper_numbers(dataset="nope") == []
