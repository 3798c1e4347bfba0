"""Shared fixtures: small blob data, a fitted LogisticRegression, a modAL-like learner."""

import pytest
from _cases import make_data


@pytest.fixture
def data():
    """A 30-sample pool, 9 labelled samples (3 per class) and a model fitted on them."""
    return make_data(0)


@pytest.fixture
def X_pool(data):
    return data.X_pool


@pytest.fixture
def classifier(data):
    """A LogisticRegression fitted on the labelled blobs."""
    return data.classifier


@pytest.fixture
def learner(data):
    """A modAL-like learner (``estimator``, ``X_training``, ``y_training``)."""
    return data.learner
