"""The documentation site: ``mkdocs build --strict`` passes, every public name of the API reference is rendered with
its math and examples, and the docstring converter (docs/_ext/rst_docstrings.py) turns reST into Markdown and
fails the build on a reference to nothing."""

from __future__ import annotations

import html
import importlib
import importlib.util
import inspect
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")
griffe = pytest.importorskip("griffe")

ROOT = Path(__file__).resolve().parents[1]
API = {  # module -> the public names its API page must render
    "encouraging.losses": None,  # its __all__
    "encouraging.engine.task": None,
    "encouraging.tasks.image": (), "encouraging.tasks.longtail": (), "encouraging.tasks.graph": (),
    "encouraging.tasks.translation": (), "encouraging.integrations.transformers": (),
    "encouraging.cli": ("main", "UsageError"),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-5000:]
    return out


def anchors(site: Path) -> set[str]:
    return {a for page in site.rglob("*.html") for a in re.findall(r'id="(encouraging\.[^"]+)"', page.read_text())}


def public_names(module_name: str, names: tuple[str, ...] | None) -> list[tuple[str, str]]:
    """(name, canonical path) of each public name: ``__all__``, or the classes and functions defined in the
    module, or the names given."""
    module = importlib.import_module(module_name)
    if names is None:
        names = tuple(module.__all__)
    elif not names:
        names = tuple(n for n, obj in vars(module).items() if not n.startswith("_")
                      and (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module_name)
    return [(n, f"{getattr(module, n).__module__}.{n}") for n in names]


def text_of(page: Path) -> str:
    body = page.read_text()
    body = body[body.index("<article"):body.index("</article>")]
    return html.unescape(re.sub(r"<[^>]+>", "", body))


@pytest.mark.parametrize("module", sorted(API))
def test_every_public_name_is_rendered(site, module):
    found = anchors(site)
    names = public_names(module, API[module])
    assert names
    missing = [n for n, path in names if path not in found and f"{module}.{n}" not in found]
    assert not missing, f"{module}: not in the API reference: {missing}"


def test_docstring_math_and_examples_render(site):
    page = site / "api" / "losses" / "index.html"
    source, text = page.read_text(), text_of(page)
    assert source.count('class="arithmatex"') > 50  # :math: roles and .. math:: blocks, for MathJax
    assert r"\[" in text and r"L = \sum_k q_k" in text  # the .. math:: block of encouraging.losses.functional
    for leftover in (":math:", ".. math::", ":func:", ":class:", ":mod:", "``"):
        assert leftover not in text, leftover
    assert '<span class="gp">&gt;&gt;&gt; </span>' in source and "<blockquote" not in source  # doctests as code
    assert 'href="#encouraging.losses.functional.encouraging_loss"' in source  # a :func: role as a link


def test_the_guides_readme_changelog_and_commands_are_pages(site):
    for guide in (ROOT / "docs").glob("*.md"):
        assert (site / guide.stem / "index.html").is_file(), guide.name
    home = text_of(site / "index.html")
    assert "The encouraging loss (EL) from" in home
    assert 'href="losses/"' in (site / "index.html").read_text()  # README's docs/losses.md, relative to the site
    assert "Keep a Changelog" in text_of(site / "changelog" / "index.html")
    commands = text_of(site / "api" / "cli" / "index.html")
    for command in ("usage: encouraging train", "usage: encouraging eval ood", "usage: encouraging translate"):
        assert command in commands


@pytest.fixture
def convert(tmp_path, monkeypatch):
    """The converter, on a package ``pkg`` whose API page renders ``pkg.mod`` (not ``pkg.hidden``)."""
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "pkg.md").write_text("::: pkg.mod\n    options:\n      members: [f, C]\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text(textwrap.dedent('''
        def f():
            """F."""

        def g():
            """Not on the page."""

        class C:
            """C."""

            lr: float = 0.1  # the learning rate
    '''))
    spec = importlib.util.spec_from_file_location("rst_docstrings", ROOT / "docs" / "_ext" / "rst_docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    extension = module.RstDocstrings(api_pages=str(tmp_path / "api"))
    loader = griffe.GriffeLoader(extensions=griffe.load_extensions(extension), search_paths=[str(tmp_path)])
    package = loader.load("pkg")
    return lambda text: extension.convert(text, package["mod"]), package


def test_converter_turns_rest_into_markdown(convert):
    convert, package = convert
    assert convert(r"with :math:`\rho \ge 0` and :func:`f`") == r"with $\rho \ge 0$ and [`f`][pkg.mod.f]"
    assert convert(":class:`~pkg.mod.C` and :func:`g`") == "[`C`][pkg.mod.C] and `g`"  # g is not rendered
    assert convert("Loss:\n\n.. math::\n\n    L = -\\log p\n\nafter") == "Loss:\n\n$$\nL = -\\log p\n$$\n\nafter"
    assert convert("Run it::\n\n    x = 1\n") == "Run it:\n\n```text\nx = 1\n```"
    assert convert("Example:\n    >>> 1\n    1") == "Examples:\n    >>> 1\n    1"
    assert convert("* a\n  b\n\n  - c\n    d") == "* a\n    b\n\n    - c\n        d"
    assert convert("Args:\n    a, b: as in f.") == "Args:\n    a: as in f.\n    b: as in f."
    assert package["mod"]["C"]["lr"].docstring.value == "the learning rate"  # a config field's comment


def test_converter_warns_on_a_reference_to_nothing(convert, caplog):
    convert, _ = convert
    with caplog.at_level(logging.WARNING):
        assert convert("see :func:`no_such_function`") == "see `no_such_function`"
    assert "'no_such_function' resolves to nothing" in caplog.text  # mkdocs --strict fails on this warning
