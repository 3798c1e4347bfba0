"""``.. md-include:: path``: include a Markdown file (CHANGELOG.md, benchmarks/README.md).

The project keeps its changelog and benchmark results in Markdown next to the code; this
directive converts the small Markdown subset they use into reStructuredText at build time,
so the documentation cannot drift from them and no Markdown parser is needed:

* ATX headings (``#`` .. ``####``; ``:skip-title:`` drops the first level-1 heading, the
  including page supplies its own title);
* paragraphs and ``-`` / ``*`` bullet lists with indented continuation lines;
* inline code, bold, italics and ``[text](url)`` links;
* fenced code blocks (with a language);
* pipe tables (rendered as ``list-table``).

Anything else passes through unchanged, so a construct this converter does not know
shows up as a docutils warning and fails the ``-W`` build rather than vanishing.
"""

import re
from pathlib import Path

from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList

_UNDERLINES = {1: "=", 2: "-", 3: "~", 4: "^"}
_CODE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)]+)\)")


def _inline(text):
    """Markdown inline markup -> reStructuredText (code spans, links)."""
    out, pos = [], 0
    for match in _CODE.finditer(text):
        before = text[pos : match.start()]
        out.append(_LINK.sub(_link, before))
        code = "``" + match.group(1) + "``"
        # rST inline markup must not touch a letter or digit: escape the gap
        if out and out[-1] and (out[-1][-1].isalnum()):
            code = "\\ " + code
        after = text[match.end() : match.end() + 1]
        if after and (after.isalnum() or after == "`"):
            code += "\\ "
        out.append(code)
        pos = match.end()
    out.append(_LINK.sub(_link, text[pos:]))
    return "".join(out)


def _link(match):
    label, url = match.group(1), match.group(2)
    if url.startswith("#"):  # in-page anchor of the Markdown file: keep the text only
        return label
    return f"`{label} <{url}>`__"


def _table(rows):
    """Pipe-table rows (header, separator, body) -> a list-table directive."""

    def cells(row):
        return [c.strip() for c in row.strip().strip("|").split("|")]

    header, body = cells(rows[0]), [cells(r) for r in rows[2:]]
    out = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *body]:
        for i, cell in enumerate(row):
            text = _inline(cell) if cell else ""
            out.append(("   * - " if i == 0 else "     - ") + text)
    out.append("")
    return out


def markdown_to_rst(text, *, skip_title=False):
    """Convert the Markdown subset described in the module docstring."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^```(\w*)\s*$", line)
        heading = re.match(r"^(#{1,4})\s+(.*)$", line)
        if fence:
            lang = fence.group(1) or "text"
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            out += [f".. code-block:: {lang}", ""] + [f"   {b}" if b else "" for b in block]
            out.append("")
        elif heading:
            level, title = len(heading.group(1)), _inline(heading.group(2).strip())
            if skip_title and level == 1:
                skip_title = False
            else:
                out += ["", title, _UNDERLINES[level] * max(len(title), 4), ""]
        elif line.lstrip().startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(lines[i])
                i += 1
            out += ["", *_table(rows)]
            continue
        else:
            out.append(_inline(line))
        i += 1
    return out


class MarkdownInclude(Directive):
    """Insert a Markdown file, converted to reStructuredText, at this point."""

    required_arguments = 1
    option_spec = {"skip-title": directives.flag}

    def run(self):
        env = self.state.document.settings.env
        rel, path = env.relfn2path(self.arguments[0])
        env.note_dependency(rel)
        text = Path(path).read_text(encoding="utf-8")
        rst = markdown_to_rst(text, skip_title="skip-title" in self.options)
        self.state_machine.insert_input(StringList(rst, source=path), path)
        return []


def setup(app):
    app.add_directive("md-include", MarkdownInclude)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
