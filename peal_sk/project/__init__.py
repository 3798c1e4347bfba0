"""Labelling projects on a real image folder: the engine behind ``peal-sk project``.

A project is a folder holding ``project.sqlite`` (images, labels with their history,
proposed batches, trainings, the embedding cache's reference), the batch sheets
``batch-<k>.csv`` / ``batch-<k>.html``, ``cache/`` (frozen backbone embeddings) and
``models/``. The images are never copied or modified.
"""

from ._project import (
    DEFAULT_STRATEGY_PARAMS,
    LabelConflictError,
    Project,
    ProjectError,
    ReadOnlyProjectError,
    init_project,
)

__all__ = [
    "DEFAULT_STRATEGY_PARAMS",
    "LabelConflictError",
    "Project",
    "ProjectError",
    "ReadOnlyProjectError",
    "init_project",
]
