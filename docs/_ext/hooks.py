"""MkDocs hooks: the pages built from files outside ``docs/`` and the command-line reference.

* ``index.md`` is README.md (its ``docs/...`` links made relative to the site) and ``changelog.md`` is
  CHANGELOG.md, so each page has one source;
* a link from a page to a repository file outside ``docs/`` (``../results/README.md``) becomes the file's path as
  text, since the site holds no repository files;
* ``<!-- cli-help -->`` becomes the synopsis of ``encouraging.cli`` and the ``--help`` of every ``encouraging``
  command, from the parser itself.
"""

from __future__ import annotations

import argparse
import os
import re
import textwrap
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
GENERATED = {"index.md": "README.md", "changelog.md": "CHANGELOG.md"}  # site page -> repository file
OUTSIDE = re.compile(r"\[([^\]]+)\]\((\.\./[^)#\s]+)(#[^)\s]*)?\)")


def on_files(files, config):
    for page, source in GENERATED.items():
        text = (ROOT / source).read_text()
        if page == "index.md":
            text = re.sub(r"\]\(docs/", "](", text)
        files.append(File.generated(config, page, content=text))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    docs = Path(config["docs_dir"]).resolve()

    def outside(match: re.Match) -> str:
        target = (docs / Path(page.file.src_uri).parent / match.group(2)).resolve()
        if target.is_relative_to(docs):
            return match.group(0)
        return f"{match.group(1)} (`{target.relative_to(ROOT)}` in the repository)"

    markdown = OUTSIDE.sub(outside, markdown)
    if "<!-- cli-help -->" in markdown:
        markdown = markdown.replace("<!-- cli-help -->", cli_help())
    return markdown


def cli_help() -> str:
    """The synopsis of the ``encouraging.cli`` docstring, then one section per command (and subcommand) with its
    ``--help`` text."""
    import encouraging.cli
    from encouraging.cli import _parser

    synopsis = next(p for p in encouraging.cli.__doc__.split("\n\n") if p.startswith("    "))

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width: the same text on every machine
    try:
        sections = [f"```text\n{textwrap.dedent(synopsis).strip()}\n```\n"]
        todo = [_parser()]
        while todo:
            parser = todo.pop(0)
            sections.append(f"### {parser.prog}\n\n```text\n{parser.format_help()}```\n")
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    todo.extend(action.choices.values())
        return "\n".join(sections)
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
