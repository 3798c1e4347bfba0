"""The active-learning loop: a modAL-compatible ``ActiveLearner``."""

from ._active_learner import ActiveLearner, QueryRecord

__all__ = ["ActiveLearner", "QueryRecord"]
