"""List-file datasets (ImageNet-LT / iNaturalist 2018 layout): finding the lists, reading them, loading the images,
the registered names, and a long-tailed run with cRT through the DataLoader path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from encouraging.data import load_image_dataset
from encouraging.data.lists import find_list_files, read_list


def _images(folder: Path, counts: list[int], prefix: str = "train") -> list[str]:
    """``counts[c]`` small RGB PNGs of class c under ``folder/prefix/<c>/``; their list lines."""
    from PIL import Image

    rng = np.random.default_rng(len(prefix))
    lines = []
    for c, n in enumerate(counts):
        (folder / prefix / str(c)).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = np.clip(rng.normal(60 + 70 * c, 20, size=(20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / prefix / str(c) / f"{i}.png")
            lines.append(f"{prefix}/{c}/{i}.png {c}")
    return lines


@pytest.fixture
def inat(tmp_path: Path) -> Path:
    """A 3-class iNaturalist-2018-style folder: a long-tailed training list (24 / 8 / 3) and a validation list; the
    images sit in train/<c>/ and val/<c>/, an ImageFolder tree too (as ImageNet-LT beside ImageNet): lists win."""
    folder = tmp_path / "inaturalist2018"
    folder.mkdir()
    (folder / "iNaturalist18_train.txt").write_text("\n".join(_images(folder, [24, 8, 3])) + "\n")
    (folder / "iNaturalist18_val.txt").write_text("\n".join(_images(folder, [4, 4, 4], "val")) + "\n")
    return folder


def test_the_lists_of_imagenet_lt_and_inaturalist_are_found(tmp_path):
    for name in ("ImageNet_LT_train.txt", "ImageNet_LT_val.txt", "ImageNet_LT_test.txt", "ImageNet_LT_open.txt"):
        (tmp_path / name).write_text("x 0\n")
    assert find_list_files(tmp_path) == (tmp_path / "ImageNet_LT_train.txt", tmp_path / "ImageNet_LT_test.txt")
    (tmp_path / "ImageNet_LT_test.txt").unlink()  # no test list: the validation list is the test set (iNaturalist)
    assert find_list_files(tmp_path) == (tmp_path / "ImageNet_LT_train.txt", tmp_path / "ImageNet_LT_val.txt")
    assert find_list_files(tmp_path / "nothing") is None
    (tmp_path / "other_train.txt").write_text("x 0\n")
    with pytest.raises(ValueError, match="several training lists"):
        find_list_files(tmp_path)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "a_train.txt").write_text("x 0\n")
    with pytest.raises(ValueError, match="no test list"):
        find_list_files(lonely)


def test_a_malformed_list_names_its_file_and_line(tmp_path):
    good = tmp_path / "train.txt"
    good.write_text("a dir/with space.jpg 3\n\nb.jpg 0\n")
    assert read_list(good) == [("a dir/with space.jpg", 3), ("b.jpg", 0)]
    for text, line in (("a.jpg 1\nb.jpg\n", 2), ("a.jpg -1\n", 1), ("a.jpg cat\n", 1)):
        good.write_text(text)
        with pytest.raises(ValueError, match=rf"train.txt:{line}: expected 'relative/path label'"):
            read_list(good)
    good.write_text("\n")
    with pytest.raises(ValueError, match="lists no images"):
        read_list(good)


def test_a_list_folder_loads_as_images_with_labels(inat, isolated):
    data = load_image_dataset(inat, image_size=16)
    assert data.info.kind == "folder" and data.info.num_classes == 3 and data.info.classes == ("0", "1", "2")
    assert (len(data.train), len(data.test)) == (35, 12)
    assert np.bincount(data.train.targets).tolist() == [24, 8, 3]
    image, label = data.test[11]
    assert image.shape == (3, 16, 16) and label == 2
    assert data.test_note.startswith("inaturalist2018 iNaturalist18_val.txt (12 images")
    registered = load_image_dataset("inat2018", root=inat.parent, image_size=16)  # an alias of inaturalist2018
    assert registered.info.title == "iNaturalist 2018" and registered.info.num_classes == 3


def test_bad_list_folders_get_clear_errors(inat, isolated):
    train = inat / "iNaturalist18_train.txt"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(line for line in lines if not line.endswith(" 1")) + "\n")  # class 1 left out
    with pytest.raises(ValueError, match=r"classes \[1\] have no training images"):
        load_image_dataset(inat)
    train.write_text("\n".join(line for line in lines if not line.endswith(" 2")) + "\n")  # test has class 2
    with pytest.raises(ValueError, match="label 2 is not a training class"):
        load_image_dataset(inat)
    train.write_text("elsewhere/0.png 0\n" + "\n".join(lines))
    with pytest.raises(FileNotFoundError, match="its first image .* does not exist"):
        load_image_dataset(inat)


def test_a_long_tailed_list_dataset_trains_as_given_and_crt_samples_classes_equally(inat, tmp_path):
    from encouraging.engine.checkpoint import load_checkpoint
    from encouraging.engine.config import Config, apply_overrides
    from encouraging.experiment import run, run_dir_for

    common = ["--name=inat-tiny", f"--data.dataset={inat}", "--data.profile=none", "--data.image_size=16",
              "--data.num_workers=0", "--data.batch_size=5", "--data.eval_batch_size=8", "--data.many_above=20",
              "--data.few_below=5", "--model.name=small_cnn", "--model.kwargs={width: 4}", "--train.epochs=1",
              "--train.threads=1", "--train.device=cpu"]
    stage1 = apply_overrides(Config(task="longtail"), common)
    run(stage1, out_dir=tmp_path / "runs", db=None, quiet=True)
    notes = (run_dir_for(stage1, tmp_path / "runs") / "notes.json").read_text()
    assert "the training split as given (35 examples)" in notes and "many 1, medium 1, few 1" in notes
    stage2 = apply_overrides(stage1, [f"--model.stage1={run_dir_for(stage1, tmp_path / 'runs')}",
                                      "--data.sampling=class_balanced", "--name=inat-tiny-crt"])
    final = run(stage2, out_dir=tmp_path / "runs", db=None, quiet=True)
    assert 0.0 <= final["final_test_few_acc"] <= 1.0
    before = load_checkpoint(run_dir_for(stage1, tmp_path / "runs") / "checkpoint.pt")["model"]
    after = load_checkpoint(run_dir_for(stage2, tmp_path / "runs") / "checkpoint.pt")["model"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(sorted(before)[-1].rsplit(".", 1)[0]) for k in changed)  # only the head
