"""peal_sk: scikit-learn compatible active learning for vision foundation models.

Query strategies (``peal_sk.selection``) need only numpy, scipy, scikit-learn and faiss;
the torch estimator lives in ``peal_sk.classifier`` and needs the ``[torch]`` extra.
"""

from . import selection
from .base import BaseSelector
from .learner import ActiveLearner
from .selection import (
    ActiveFTSelector,
    BadgeSelector,
    BiLAFSelector,
    ClassBalancedSelector,
    DropQuerySelector,
    EntropySelector,
    FeatureDistanceSelector,
    HybridSelector,
    KCenterSelector,
    LeastConfidentSelector,
    MarginSelector,
    ProbCoverSelector,
    RandomSelector,
    TypiClustSelector,
    activeft_sampling,
    badge_sampling,
    bilaf,
    bilaf_sampling,
    dropquery_sampling,
    entropy_sampling,
    featdist_sampling,
    hybrid_sampling,
    least_confident_sampling,
    margin_sampling,
    probcover_sampling,
    random_sampling,
    typiclust_sampling,
)

__version__ = "0.1.0"

#: Names served lazily from ``peal_sk.classifier`` (they need the ``[torch]`` extra).
_LAZY = {"PEALClassifier", "BackboneEmbedder"}


def __getattr__(name):
    if name in _LAZY:
        from . import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'peal_sk' has no attribute {name!r}")


__all__ = [
    "ActiveFTSelector",
    "BiLAFSelector",
    "activeft_sampling",
    "bilaf",
    "bilaf_sampling",
    "ActiveLearner",
    "BaseSelector",
    "ClassBalancedSelector",
    "EntropySelector",
    "FeatureDistanceSelector",
    "HybridSelector",
    "KCenterSelector",
    "LeastConfidentSelector",
    "MarginSelector",
    "RandomSelector",
    "__version__",
    "entropy_sampling",
    "featdist_sampling",
    "hybrid_sampling",
    "least_confident_sampling",
    "margin_sampling",
    "random_sampling",
    "selection",
    "ProbCoverSelector",
    "TypiClustSelector",
    "probcover_sampling",
    "typiclust_sampling",
    # model-based diversity
    "BadgeSelector",
    "DropQuerySelector",
    "badge_sampling",
    "dropquery_sampling",
]
