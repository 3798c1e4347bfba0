"""Query strategies.

Every strategy comes in three forms sharing one implementation: a score/helper function,
a selector class (``select``, ``score_samples``, callable as a modAL strategy) and a
modAL query function ``*_sampling(classifier, X_pool, n_instances=1, **kwargs)``.

Every strategy is registered under a short name: :func:`list_selectors` lists them with
their capability tags, :func:`get_selector` builds one by name.
"""

from ._activeft import ActiveFTSelector, activeft_loss, activeft_sampling, activeft_select
from ._badge import BadgeSelector, badge_embedding_norms, badge_sampling
from ._bilaf import BiLAFSelector, bilaf, bilaf_sampling
from ._class_balanced import ClassBalancedSelector, class_balanced_picks, class_balanced_sampling
from ._dropquery import DropQuerySelector, dropquery_sampling, dropquery_scores
from ._feature_distance import (
    FeatureDistanceSelector,
    KCenterSelector,
    featdist_sampling,
    feature_distance_scores,
    kcenter_sampling,
)
from ._hybrid import HybridSelector, hybrid_sampling
from ._kmeans import KMeansSelector, kmeans_sampling
from ._probcover import ProbCoverSelector, probcover_sampling
from ._random import RandomSelector, random_sampling
from ._registry import (
    SelectorInfo,
    get_selector,
    list_selectors,
    make_selector,
    parse_selector_params,
    register_selector,
)
from ._typiclust import TypiClustSelector, typicality_scores, typiclust_sampling
from ._uncertainty import (
    EntropySelector,
    LeastConfidentSelector,
    MarginSelector,
    entropy_sampling,
    entropy_scores,
    least_confident_sampling,
    least_confident_scores,
    margin_sampling,
    margin_scores,
)

__all__ = [
    "ActiveFTSelector",
    "BiLAFSelector",
    "KMeansSelector",
    "activeft_loss",
    "activeft_sampling",
    "activeft_select",
    "bilaf",
    "bilaf_sampling",
    "kmeans_sampling",
    "ClassBalancedSelector",
    "EntropySelector",
    "FeatureDistanceSelector",
    "HybridSelector",
    "KCenterSelector",
    "LeastConfidentSelector",
    "MarginSelector",
    "RandomSelector",
    "class_balanced_picks",
    "class_balanced_sampling",
    "entropy_sampling",
    "entropy_scores",
    "featdist_sampling",
    "feature_distance_scores",
    "hybrid_sampling",
    "kcenter_sampling",
    "least_confident_sampling",
    "least_confident_scores",
    "margin_sampling",
    "margin_scores",
    "random_sampling",
    "SelectorInfo",
    "get_selector",
    "list_selectors",
    "make_selector",
    "parse_selector_params",
    "register_selector",
    "ProbCoverSelector",
    "TypiClustSelector",
    "probcover_sampling",
    "typicality_scores",
    "typiclust_sampling",
    # model-based diversity (docs/user_guide/algorithms.rst)
    "BadgeSelector",
    "DropQuerySelector",
    "badge_embedding_norms",
    "badge_sampling",
    "dropquery_sampling",
    "dropquery_scores",
]
