"""``.. selector-table::``: the table of strategies, generated from the registry.

Reads :func:`peal_sk.selection.list_selectors`, so the documentation lists every
registered strategy with the tags its class declares, and nothing written by hand can
drift from the code.
"""

from docutils import nodes
from docutils.parsers.rst import Directive

_YES_NO = {True: "yes", False: "no"}


def _rows():
    from peal_sk.selection import list_selectors

    rows = []
    for info in list_selectors():
        tags = info.tags
        function = info.function.__name__ if info.function is not None else ""
        defaults = ", ".join(f"{k}={v!r}" for k, v in info.defaults.items())
        cls = info.selector.__name__ + (f"({defaults})" if defaults else "")
        rows.append(
            [
                info.name,
                cls,
                function,
                _YES_NO[tags.cold_start],
                _YES_NO[tags.requires_proba],
                _YES_NO[tags.requires_labels],
                _YES_NO[tags.uses_embeddings],
            ]
        )
    return rows


class SelectorTable(Directive):
    has_content = False

    def run(self):
        header = [
            "name",
            "selector",
            "modAL function",
            "cold start",
            "needs predict_proba",
            "needs labels",
            "uses embeddings",
        ]
        table = nodes.table(classes=["selector-table"])
        group = nodes.tgroup(cols=len(header))
        table += group
        for _ in header:
            group += nodes.colspec(colwidth=1)

        def row(cells, literal):
            r = nodes.row()
            for i, text in enumerate(cells):
                entry = nodes.entry()
                para = nodes.paragraph()
                para += nodes.literal(text=text) if literal and i < 3 and text else nodes.Text(text)
                entry += para
                r += entry
            return r

        head = nodes.thead()
        head += row(header, literal=False)
        body = nodes.tbody()
        for cells in _rows():
            body += row(cells, literal=True)
        group += head
        group += body
        return [table]


def setup(app):
    app.add_directive("selector-table", SelectorTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
