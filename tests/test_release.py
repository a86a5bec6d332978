"""What a release needs: one version, the license, the citation, the changelog, the extras, and a wheel that works
with nothing but torch and numpy installed."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import encouraging
from encouraging.cli import main
from encouraging.extras import EXTRAS, MissingExtraError, missing, require

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRA_HINT = "pip install 'encouraging[experiments]'"


def test_the_version_has_one_source():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "encouraging.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", encouraging.__version__)


def test_cli_prints_the_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == f"encouraging {encouraging.__version__}"


def test_license_file_matches_pyproject():
    assert PYPROJECT["project"]["license"] == "MIT" and PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Permission is hereby granted, free of charge" in text


def test_changelog_names_the_current_version_first():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "Keep a Changelog" in text
    versions = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", text, re.MULTILINE)
    assert versions and versions[0] == encouraging.__version__


def test_citation_names_the_paper_and_the_software():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert paper["title"] == "Well-classified Examples are Underestimated in Classification with Deep Neural Networks"
    assert [f"{a['given-names']} {a['family-names']}" for a in paper["authors"]] == [
        "Guangxiang Zhao", "Wenkai Yang", "Xuancheng Ren", "Lei Li", "Yunfang Wu", "Xu Sun"]
    assert paper["year"] == 2022 and "AAAI" in paper["conference"]["name"]
    assert "2110.06537" in paper["url"] and paper["identifiers"][0]["value"] == "10.48550/arXiv.2110.06537"


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_extras_list_the_modules_of_pyproject_extras(extra):
    """:data:`EXTRAS` names, per extra, the import names of exactly the packages pyproject.toml declares."""
    declared = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"][extra]}
    if missing(extra):
        pytest.skip(f"the {extra} extra is not installed here")
    provided = _packages_distributions()
    found = {canonicalize_name(d) for module in EXTRAS[extra] for d in provided.get(module, [])}
    assert found == declared


def test_a_missing_extra_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "yaml" else real(name, *a))
    with pytest.raises(MissingExtraError, match=re.escape(f"(yaml not installed): {EXTRA_HINT}")) as error:
        require("experiments", "the engine")
    assert isinstance(error.value, ModuleNotFoundError) and error.value.name == "yaml"
    require("translation", "the translation task")  # installed: no error
    with pytest.raises(ValueError, match="extra must be one of"):
        missing("experiment")


def test_the_engine_refuses_to_import_without_the_experiments_extra():
    """In a fresh interpreter where yaml cannot be found, importing the engine (as every CLI command does) names
    the extra; the losses still import."""
    code = ("import sys; sys.modules['yaml'] = None\n"
            "from encouraging import EncouragingLoss\n"
            "import encouraging.engine\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "MissingExtraError" in result.stderr and EXTRA_HINT in result.stderr


def test_the_command_says_which_extra_to_install_in_one_line():
    """Without the experiments extra, every command ends with one line naming it (no traceback), exit status 2."""
    code = ("import sys; sys.modules['yaml'] = None\n"
            "from encouraging.cli import main\n"
            "sys.exit(main(['list', 'losses']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"encouraging list: error: encouraging's experiment layer (the "
                                                  f"engine, tasks, evaluations and the encouraging command) needs "
                                                  f"the 'experiments' extra (yaml not installed): {EXTRA_HINT}"]


def _torch_closure() -> dict[str, metadata.Distribution]:
    """torch, numpy and every distribution they require on this platform (their extras included), by name."""
    found: dict[str, metadata.Distribution] = {}
    todo = [Requirement("torch"), Requirement("numpy")]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = found.setdefault(key[0], metadata.distribution(req.name))
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in req.extras or {""}):
                todo.append(sub)
    return found


def _expose(dists: dict[str, metadata.Distribution], folder: Path) -> None:
    """Symlink each distribution's top-level files and folders (its packages and its .dist-info) into ``folder``."""
    folder.mkdir()
    for dist in dists.values():
        for file in dist.files or []:
            top = Path(file).parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth") or (folder / top).exists():
                continue
            (folder / top).symlink_to(Path(dist.locate_file(top)))


def _run(*args, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs)
    if check:
        assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_wheel_works_in_a_fresh_environment_with_only_torch_and_numpy(tmp_path):
    """``python -m build`` makes a wheel and an sdist that pass ``twine check``; the wheel, installed into a fresh
    virtual environment holding only torch and numpy, gives a working ``EncouragingLoss``, ``encouraging
    --version``, and a message naming the ``experiments`` extra when an experiment feature is used.

    The environment reuses the torch installed here instead of downloading it. ``--system-site-packages`` would
    not do (the base Python has no torch), and a ``.pth`` line naming this site-packages would expose every package
    of it, the extras included. So the test symlinks exactly torch, numpy and their runtime requirements (the
    closure of their ``Requires-Dist`` on this platform: sympy, the NVIDIA libraries, ...) with their
    ``.dist-info`` into one folder, and a ``.pth`` file in the new environment names that folder. pip then sees
    torch and numpy as installed, and installs the wheel with ``--no-index``: nothing is downloaded, and an unmet
    requirement would fail the install. The build runs with ``--no-isolation`` (setuptools from this
    environment) for the same reason.
    """
    pytest.importorskip("build")
    pytest.importorskip("twine")
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    assert wheels[0].name == f"encouraging-{encouraging.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheels[0]) as wheel:  # the CPU kernel's source, built on first use
        assert "encouraging/losses/csrc/encouraging_cpu.cpp" in wheel.namelist()
    checked = _run(sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists)
    assert checked.stdout.count("PASSED") == 2

    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    _expose(_torch_closure(), tmp_path / "torch-only")
    (site / "torch-only.pth").write_text(f"{tmp_path / 'torch-only'}\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--quiet", wheels[0])

    bare = {**os.environ, "PYTHONNOUSERSITE": "1"}
    bare.pop("PYTHONPATH", None)
    modules = [m for extra in ("experiments", "attacks", "graph", "translation", "transformers") for m in EXTRAS[extra]]
    code = ("import importlib.metadata as m, importlib.util, torch\n"
            "from encouraging import EncouragingLoss, __version__\n"
            "logits = torch.randn(8, 10, requires_grad=True)\n"
            "EncouragingLoss(log_end=0.75)(logits, torch.randint(10, (8,))).backward()\n"
            "assert logits.grad is not None and torch.isfinite(logits.grad).all()\n"
            f"present = [n for n in {modules!r} if importlib.util.find_spec(n)]\n"
            "print(__version__, m.version('encouraging'), m.metadata('encouraging')['License-Expression'], present)\n")
    out = _run(python, "-c", code, env=bare).stdout.strip().split(maxsplit=3)
    assert out == [encouraging.__version__, encouraging.__version__, "MIT", "[]"]

    script = env / "bin" / "encouraging"
    assert _run(script, "--version", env=bare).stdout.strip() == f"encouraging {encouraging.__version__}"
    for command in (["list", "losses"], ["train", "configs/demo.yaml"]):
        result = _run(script, *command, check=False, env=bare, cwd=ROOT)
        assert result.returncode != 0 and EXTRA_HINT in result.stderr, result.stderr[-2000:]
