r"""A griffe extension: the reST of the package's docstrings as Markdown, so mkdocstrings renders it.

Written here because mkdocstrings' Python handler reads Google, NumPy or Sphinx sections but renders their text as
Markdown, and no maintained griffe extension converts reST roles and directives inside Google-style sections.

The docstrings are Google-style (``Args:``, ``Returns:``, ``Example:``) with reST inside; this converts, before
griffe parses the sections:

* ``:math:`x``` to ``$x$`` and ``.. math::`` blocks to ``$$ ... $$`` (pymdownx.arithmatex and MathJax render them);
* ``:func:`` / ``:class:`` / ``:meth:`` / ``:attr:`` / ``:mod:`` / ``:data:`` / ``:exc:`` roles to autorefs
  links to the target's canonical path when the API pages render that object, else to code (``~`` shows the last
  name, a leading dot is relative to the module's package); a name that resolves to nothing in the package is
  a warning, so ``mkdocs build --strict`` fails on it;
* ``text::`` and its indented block to ``text:`` and a fenced block;
* reST's 2-space list indentation to Markdown's 4;
* doctest lines outside a section to a fenced block, and ``Example:`` to ``Examples:`` (the title under
  which griffe reads doctests);
* an ``Args:`` entry for several parameters (``a, b: as in f``) to one entry each;

and gives a class attribute without a docstring its comments as one (the config sections' fields).

Which objects the site renders is read from the ``::: identifier`` blocks (and their ``members`` option) of the
pages under ``api_pages``.
"""

from __future__ import annotations

import io
import re
import textwrap
import tokenize
from pathlib import Path

import griffe
import yaml

ROLE = re.compile(r":(func|class|meth|attr|mod|data|exc|obj):`([^`]+)`")
MATH = re.compile(r":math:`([^`]+)`")
DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
BULLET = re.compile(r"^(\s*)([*+-]|\d+[.)])\s")
LITERAL = re.compile(r"^(\s*)(.*?)(\s?)::\s*$")
EXTERNAL = ("torch", "numpy", "transformers", "triton")  # references outside the package: shown as code
BLOCK = re.compile(r"^:::[ \t]+(\S+)[ \t]*\n((?:[ \t]+\S.*\n?)*)", re.MULTILINE)  # ::: identifier + options
NAMES = re.compile(r"^([ \t]+)(\w+(?:,\s*\w+)+):[ \t]+(.*)$", re.MULTILINE)  # "a, b, c: as in f" (Args:)
EXAMPLE = re.compile(r"^([ \t]*)Example:[ \t]*$", re.MULTILINE)  # griffe reads doctests under "Examples:" only
SECTION = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")  # a Google section title (Args:, Example:): never a list's end

logger = griffe.get_logger("griffe_rst")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], start: int, base: int) -> int:
    """The end (exclusive) of the indented block that starts at ``start`` (blank lines skipped) below indent
    ``base``; trailing blank lines are not part of it."""
    end = start
    i = start
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
        if lines[i].strip():
            end = i + 1
        i += 1
    return end


def _rewrite_blocks(lines: list[str], match, render) -> list[str]:
    """``lines`` with each line that ``match(line)`` matches (group 1: its indentation), and the indented block
    below it, replaced by ``render(match, block, out)`` (``out``: the lines written so far)."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        found = match(lines[i])
        if not found:
            out.append(lines[i])
            i += 1
            continue
        end = _block(lines, i + 1, len(found.group(1)))
        out += render(found, lines[i + 1:end], out)
        i = end
    return out


def _math(match: re.Match, block: list[str], out: list[str]) -> list[str]:
    """``.. math::`` (with its inline formula, if any) as a ``$$`` block, set off from a preceding line."""
    pad, inline = match.group(1), match.group(2).strip()
    body = ([inline] if inline else []) + [line.strip() for line in block if line.strip()]
    return [""] * bool(out and out[-1].strip()) + [f"{pad}$$", *(f"{pad}{line}" for line in body), f"{pad}$$"]


def _literal(match: re.Match, block: list[str], out: list[str]) -> list[str]:
    """``text::`` and its indented block as ``text:`` and a fenced block."""
    pad, text = match.group(1), match.group(2)
    code = block
    while code and not code[0].strip():
        code = code[1:]
    depth = min((_indent(line) for line in code if line.strip()), default=0)
    head = [f"{pad}{text}:", ""] if text else []
    return head + [f"{pad}```text", *(f"{pad}{line[depth:]}" if line.strip() else "" for line in code), f"{pad}```"]


def _math_blocks(lines: list[str]) -> list[str]:
    return _rewrite_blocks(lines, DIRECTIVE.match, _math)


def _literal_blocks(lines: list[str]) -> list[str]:
    return _rewrite_blocks(lines, lambda line: None if line.lstrip().startswith("..") else LITERAL.match(line),
                           _literal)


def _doctests(lines: list[str]) -> list[str]:
    """Doctest lines outside a section (at the docstring's own indentation) as a fenced block; griffe reads those
    under ``Examples:`` itself."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        end = i
        while end < len(lines) and lines[end].strip() and not lines[end].startswith(" "):
            end += 1
        if out and out[-1].strip():
            out.append("")
        out += ["```pycon", *lines[i:end], "```"]
        i = end
    return out


def _lists(lines: list[str]) -> list[str]:
    """Double the indentation inside reST lists (items indent their text by 2, Markdown needs 4): below a list's
    first item, every line indented past that item becomes base + 2 x (indent - base). Code blocks move along but
    neither start nor end a list."""
    out: list[str] = []
    base = None  # the indent of the current list's first item
    fenced = False
    for line in lines:
        indent = _indent(line)
        fence = line.lstrip().startswith("```")
        if line.strip() and not (fenced or fence):
            if base is not None and (indent < base or (indent == base and not BULLET.match(line))):
                base = None
            if base is None and BULLET.match(line) and not SECTION.match(line):
                base = indent
        fenced ^= fence
        if base is not None and line.strip() and indent > base:
            line = " " * (base + 2 * (indent - base)) + line.lstrip(" ")
        out.append(line)
    return out


class RstDocstrings(griffe.Extension):
    """Converts every docstring of a loaded package (see the module docstring)."""

    def __init__(self, api_pages: str = "docs/api") -> None:
        super().__init__()
        self.blocks = []  # (identifier, options) of every ::: block
        for page in sorted(Path(api_pages).rglob("*.md")):
            for match in BLOCK.finditer(page.read_text()):
                options = (yaml.safe_load(textwrap.dedent(match.group(2))) or {}).get("options", {})
                self.blocks.append((match.group(1), options))
        self.rendered: set[str] = set()  # canonical paths of the modules and module members the pages render

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        self.collection = loader.modules_collection
        self.package = pkg.name
        for identifier, options in self.blocks:
            if identifier.split(".")[0] == pkg.name:
                self._add(identifier, options.get("members", True))
        for obj in _walk(pkg):
            if obj.is_attribute and obj.docstring is None and obj.parent is not None and obj.parent.is_class:
                comment = _comment(obj)
                if comment:
                    obj.docstring = griffe.Docstring(comment, lineno=obj.lineno, parent=obj)
            if obj.docstring is not None:
                obj.docstring.value = self.convert(obj.docstring.value, obj)

    def _add(self, identifier: str, members: bool | list[str]) -> None:
        obj = self.collection[identifier]
        obj = obj.final_target if obj.is_alias else obj
        self.rendered.add(obj.path)
        if not obj.is_module or members is False:
            return
        if members is True:  # mkdocstrings' default: the public members defined here (not imported), documented
            members = [name for name, member in obj.members.items()
                       if not name.startswith("_") and not member.is_alias and member.has_docstring]
        for name in members:
            member = obj.members[name]
            self.rendered.add((member.final_target if member.is_alias else member).path)

    def convert(self, text: str, obj: griffe.Object) -> str:
        lines = _lists(_doctests(_literal_blocks(_math_blocks(text.splitlines()))))
        text = "\n".join(lines)
        text = EXAMPLE.sub(r"\1Examples:", text)
        text = NAMES.sub(lambda m: "\n".join(f"{m.group(1)}{name.strip()}: {m.group(3)}"
                                             for name in m.group(2).split(",")), text)
        text = MATH.sub(lambda m: f"${' '.join(m.group(1).split())}$", text)
        return ROLE.sub(lambda m: self.reference(m.group(2), obj), text)

    def reference(self, name: str, obj: griffe.Object) -> str:
        short = name.startswith("~")
        name = re.sub(r"\s+", "", name).lstrip("~")
        shown = name.rsplit(".", 1)[-1] if short else name.lstrip(".")
        target = self.find(name, obj)
        if target is None:
            external = name.split(".")[0] in EXTERNAL
            if not external and self.is_rendered(obj):
                logger.warning(f"{obj.path}: the docstring's reference {name!r} resolves to nothing")
            return f"`{shown}`"
        return f"[`{shown}`][{target.path}]" if self.is_rendered(target) else f"`{shown}`"

    def find(self, name: str, obj: griffe.Object) -> griffe.Object | None:
        """The object ``name`` names from ``obj``'s scope, through aliases; None outside the package."""
        if name.startswith("."):
            dots = len(name) - len(name.lstrip("."))
            module = obj.module
            parts = module.path.split(".")[: len(module.path.split(".")) - dots + module.is_init_module]
            path = ".".join(parts + [name.lstrip(".")])
        elif name.split(".")[0] == self.package:
            path = name
        else:
            head, _, rest = name.partition(".")
            path = _resolve(obj, head)
            if path is None:
                return None
            path += f".{rest}" if rest else ""
        if path.split(".")[0] != self.package:
            return None
        try:
            found = self.collection[path]
            return found.final_target if found.is_alias else found
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None

    def is_rendered(self, obj: griffe.Object) -> bool:
        """Whether an API page renders ``obj``: a rendered module or module member, or a public, documented member
        of a rendered class."""
        if obj.path in self.rendered:
            return True
        parent = obj.parent
        if parent is None or not parent.is_class or obj.name.startswith("_") or not obj.has_docstring:
            return False
        return self.is_rendered(parent)


def _resolve(obj: griffe.Object, name: str) -> str | None:
    """The path ``name`` names in ``obj``'s scope: its own and its parents' members and imports, and the members a
    class inherits."""
    scope: griffe.Object | None = obj
    while scope is not None:
        if scope.is_class:
            try:
                if name in scope.all_members:
                    return f"{scope.path}.{name}"
            except griffe.AliasResolutionError:
                pass
        scope = scope.parent
    try:
        return obj.resolve(name)
    except griffe.NameResolutionError:
        return None


def _comment(obj: griffe.Object) -> str:
    """The comment lines just above a class attribute and the comments on its own lines (the config sections'
    fields are documented so: ``lr: float = 0.1  # ...``)."""
    if not obj.lineno or obj.filepath is None:
        return ""
    lines = obj.lines_collection[obj.filepath]
    above = []
    i = obj.lineno - 2
    while i >= 0 and lines[i].strip().startswith("#"):
        above.insert(0, lines[i].strip().lstrip("#").strip())
        i -= 1
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO("\n".join(obj.lines) + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        tokens = []
    return " ".join(above + [t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT])


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)
