"""PEALClassifier with Hugging Face accelerate: the accelerator in use, and pickling.

An ``Accelerator`` stands for the distributed setup of the process that made it; these
methods keep it out of pickles (a pickled fitted estimator holds a plain single-process
net) and in deep copies (which stay in the process).
"""

# SPDX-License-Identifier: BSD-3-Clause

import copy

from skorch import NeuralNetClassifier

from ._torch_utils import check_accelerator, make_accelerator, resolve_device

__all__ = []


class _AcceleratorMixin:
    """The ``accelerator`` parameter's resolution and the pickling it needs."""

    def _accelerator(self):
        """The accelerator in use: the fitted one once fitted, else from the parameter."""
        if hasattr(self, "net_"):
            return getattr(self, "accelerator_", None)
        if self.accelerator is None:
            return None
        if isinstance(self.accelerator, str):  # "auto"
            return make_accelerator(self.device)
        return self.accelerator

    def _single_process_net(self):
        """``net_`` without accelerate: the pickled form of an accelerate-trained net.

        The same trained module (unwrapped) and history in a plain skorch net (default
        callbacks, a fresh optimiser: ``fit`` starts over anyway), on ``device``.
        """
        plain = NeuralNetClassifier(self._trained_module(), device=None, **self._net_params())
        plain.initialize()  # device=None: the module is not moved
        plain.history_ = self.net_.history_
        plain.device = resolve_device(self.device)  # where unpickling puts the module
        return plain

    def __getstate__(self):
        # An Accelerator stands for the distributed setup of the process that made it:
        # unpickled elsewhere it would be a stale copy. The pickle holds a plain
        # single-process model (loading it needs no accelerate) and accelerator="auto"
        # in place of an instance (a refit builds the new process's own).
        state = super().__getstate__()
        fitted = state.get("accelerator_") is not None
        if not fitted and (self.accelerator is None or isinstance(self.accelerator, str)):
            return state
        state = dict(state)
        if not isinstance(self.accelerator, str | None):
            state["accelerator"] = "auto"
        if fitted:
            del state["accelerator_"]
            state["net_"] = self._single_process_net()
        return state

    def __deepcopy__(self, memo):
        # a deep copy stays in this process: it keeps the accelerator (which
        # Accelerator.__deepcopy__ shares, as sklearn's clone does) and the accelerated net
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def _fit_accelerator(self):
        """Set (or clear) ``accelerator_`` and check it against ``device`` / ``precision``."""
        self.__dict__.pop("accelerator_", None)
        if self.accelerator is None:
            return None
        if isinstance(self.accelerator, str):  # "auto"
            accelerator = make_accelerator(self.device)
        else:
            accelerator = self.accelerator
        check_accelerator(accelerator, self.device, self.precision)  # before any loading
        self.accelerator_ = accelerator
        return accelerator
