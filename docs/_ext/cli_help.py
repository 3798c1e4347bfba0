"""``.. cli-help:: project train``: the ``--help`` text of a ``peal-sk`` command.

The command-line reference shows what ``peal-sk ... --help`` prints, generated from the
parser at build time, so the page cannot drift from the options.
"""

import argparse
import os

from docutils import nodes
from docutils.parsers.rst import Directive


def _subparser(parser, words):
    for word in words:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word not in actions[0].choices:
            raise ValueError(f"peal-sk has no command {' '.join(words)!r}")
        parser = actions[0].choices[word]
    return parser


class CliHelp(Directive):
    """Insert ``peal-sk <words> --help`` as a literal block."""

    required_arguments = 0
    optional_arguments = 3

    def run(self):
        from peal_sk.__main__ import build_parser

        old = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "88"  # argparse wraps at $COLUMNS: the same text everywhere
        try:
            text = _subparser(build_parser(), self.arguments).format_help()
        finally:
            if old is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = old
        node = nodes.literal_block(text, text)
        node["language"] = "text"
        return [node]


def setup(app):
    app.add_directive("cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
