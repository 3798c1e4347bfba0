"""What every part of a project shares: its errors, file writing, listings."""

# SPDX-License-Identifier: BSD-3-Clause

import getpass
import importlib.util
import os

from ..utils._image_files import IMAGE_EXTENSIONS
from ..utils._io import write_atomic

__all__ = [
    "IMAGE_EXTENSIONS",
    "TORCH_EXTRA",
    "LabelConflictError",
    "MissingExtraError",
    "ProjectError",
    "ReadOnlyProjectError",
    "claim",
    "default_annotator",
    "listing",
    "missing_modules",
    "require_torch",
    "write_atomic",
]

_MAX_LISTED = 20


class ProjectError(ValueError):
    """A user error: bad input, a missing project, nothing to do."""


class ReadOnlyProjectError(ProjectError):
    """A command that writes was asked of a project opened read-only."""


class MissingExtraError(ProjectError):
    """A command needs an optional extra that is not installed (the message says which)."""


#: the modules of the ``[torch]`` extra that embedding and fine-tuning import
TORCH_EXTRA = ("torch", "torchvision", "timm", "peft", "skorch")


def missing_modules(modules):
    """The names in ``modules`` that cannot be imported here (looked up, not imported)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require_torch(what):
    """Raise :class:`MissingExtraError` when the ``[torch]`` extra is incomplete."""
    missing = missing_modules(TORCH_EXTRA)
    if missing:
        raise MissingExtraError(
            f"{what} needs the [torch] extra, which is not installed (missing: "
            f"{', '.join(missing)}); install it with: pip install 'peal-sk[torch]'"
        )


class LabelConflictError(ProjectError):
    """An import would change current labels without ``relabel``: nothing was imported.

    ``conflicts`` lists ``(relpath, current label, imported label)``.
    """

    def __init__(self, what, conflicts):
        self.conflicts = list(conflicts)
        listed = listing(f"{rel}: {old} -> {new}" for rel, old, new in self.conflicts)
        super().__init__(
            f"nothing imported from {what}: {len(self.conflicts)} label(s) differ from the "
            f"current ones (pass --relabel / relabel=True to apply them; the old labels stay "
            f"in the history): {listed}"
        )


def listing(items, n=_MAX_LISTED):
    """``a; b; c; ... and 7 more``."""
    items = list(items)
    shown = "; ".join(str(i) for i in items[:n])
    return shown + (f"; ... and {len(items) - n} more" if len(items) > n else "")


def default_annotator():
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name (e.g. a container without passwd entry)
        return "unknown"


def claim(path):
    """Create ``path`` empty and exclusively (False when it exists)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True
