"""Pool-based active-learning simulations: the engine behind ``peal-sk simulate``.

A run is a grid of cells, one per (mode, model, strategy, seed). A cell writes a
checkpoint to ``<out>/cells/`` after every cycle and its result when it finishes (both
atomically), so an interrupted run resumes at the cycle where it stopped, with the same
final numbers; a results folder made with another configuration is never mixed into or
overwritten without ``force=True``.
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import csv
import dataclasses
import functools
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from ..utils._io import write_atomic
from ._data import load_dataset

__all__ = ["MODELS", "SimulationConfig", "simulate", "strategies_for_mode"]

MODELS = ("logreg", "linear", "lora")

#: Version of the cycle engine, part of every digest: results of another engine have other
#: random draws and are never mixed with this one's. 2: each cycle's draws are seeded from
#: (seed, cycle), so a run resumed at any cycle equals an uninterrupted one.
ENGINE = 2

#: Per-cycle times of a cell (``timing`` in ``results.json``), in seconds.
TIMES = ("fit_s", "inference_s", "selection_s", "score_s")

#: The model's methods whose time during a query counts as pool inference.
INFERENCE_METHODS = (
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "predict",
    "transform",
)


def strategies_for_mode(mode):
    """Names of the registered strategies a simulation mode can run.

    The iterative loop (PEAL) can run every strategy: after the first labels there is a
    model and labelled data. One-shot selection (BiLAF paper) runs the cold-start ones,
    those whose tags say they need neither labels nor a model.

    Parameters
    ----------
    mode : {"iterative", "one-shot"}

    Returns
    -------
    names : list of str

    Examples
    --------
    >>> from peal_sk.experiments import strategies_for_mode
    >>> "bilaf" in strategies_for_mode("one-shot"), "entropy" in strategies_for_mode("one-shot")
    (True, False)
    """
    from ..selection import list_selectors

    tags = {"cold_start": True} if mode == "one-shot" else {}
    return [info.name for info in list_selectors(**tags)]


@dataclass
class SimulationConfig:
    """Everything that defines a run (its hash names the results).

    Attributes
    ----------
    dataset : str
        "digits", a ``.npz`` file or an image folder (see :func:`load_dataset`).
    mode : {"iterative", "one-shot"}
    strategies : list of str
    seeds : list of int
    models : list of {"logreg", "linear", "lora"}
        "logreg": StandardScaler + LogisticRegression on features (raw pixels or frozen
        backbone embeddings); "linear" / "lora": :class:`~peal_sk.PEALClassifier` on the
        images (linear probing vs LoRA fine-tuning, retrained each cycle).
    features : {"raw", "backbone"}
        Features for "logreg" and for one-shot selection: the pixels (or the dataset's
        feature rows), or frozen embeddings of ``backbone``.
    backbone, pretrained, img_size, backbone_kwargs, epochs, lr
    lora_last_blocks : int or None
        The "lora" model adapts the last this many blocks (None or 0: every block). 2 by
        default: on CIFAR-10 with EfficientNet-Lite0 at 128 px and 200 labels it was the
        measured compromise between accuracy and time per cycle (docs: PEAL's loop;
        ``benchmarks/bench_lora_blocks.py``).
        The backbone and PEALClassifier
        settings ("linear" / "lora" models, "backbone" features).
    initial, step, cycles : int
        Iterative schedule: random initial labels, labels per cycle, number of cycles.
    budgets : list of int
        One-shot label budgets.
    strategy_params : dict
        Parameters per strategy, ``{"bilaf": {"n_cores": 30}}`` (the ``--param
        bilaf.n_cores=30`` options); unset ones take the registry's command-line defaults
        (BiLAF: a third of each batch as cores).
    bilaf_cores : float or int
        Shortcut for ``strategy_params={"bilaf": {"n_cores": ...}}``.
    test_size : float, int or None
        Without a test split of its own, the dataset is split into train and test, the test
        part being this fraction or number of its samples (None: 0.25). A ``.npz`` with
        ``X_test`` and ``y_test`` is tested on that split: all of it when None, else a
        seeded, stratified subsample of this fraction or number of it.
    pool_size : int or None
        The unlabelled pool: a seeded, stratified subsample of this many training samples
        (None: all of them). Never holds a test sample.

    See Also
    --------
    simulate : Runs it.

    Examples
    --------
    >>> from peal_sk.experiments import SimulationConfig
    >>> config = SimulationConfig(strategies=["random", "margin"], seeds=[0], cycles=2)
    >>> config.validate().mode, len(config.digest())
    ('iterative', 16)
    """

    dataset: str = "digits"
    mode: str = "iterative"
    strategies: list = field(default_factory=lambda: ["random", "entropy", "margin", "featdist"])
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    models: list = field(default_factory=lambda: ["logreg"])
    features: str = "raw"
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    img_size: int = 224
    backbone_kwargs: dict = field(default_factory=dict)
    epochs: int = 10
    lr: float = 1e-3
    lora_last_blocks: object = 2
    initial: int = 10
    step: int = 10
    cycles: int = 8
    budgets: list = field(default_factory=lambda: [20, 40, 80])
    bilaf_cores: object = None
    test_size: object = None
    strategy_params: dict = field(default_factory=dict)
    pool_size: object = None

    def validate(self):
        """Check the configuration; raise ``ValueError`` naming what is wrong.

        Returns
        -------
        self : SimulationConfig
        """
        if self.mode not in ("iterative", "one-shot"):
            raise ValueError(f"mode must be 'iterative' or 'one-shot'; got {self.mode!r}.")
        allowed = strategies_for_mode(self.mode)
        unknown = [s for s in self.strategies if s not in allowed]
        if unknown:
            raise ValueError(
                f"unknown strategies {unknown} for mode {self.mode!r}; choose from {allowed}."
            )
        from ..selection import get_selector

        for name, params in self.strategy_params.items():
            if name not in self.strategies:
                raise ValueError(
                    f"strategy_params names {name!r}, which is not among the strategies "
                    f"{list(self.strategies)}."
                )
            try:  # a bad parameter fails now, before any work
                get_selector(name, **params)
            except TypeError as exc:
                raise ValueError(f"strategy_params: {exc}") from exc
        bad = [m for m in self.models if m not in MODELS]
        if bad:
            raise ValueError(f"unknown models {bad}; choose from {list(MODELS)}.")
        if self.features not in ("raw", "backbone"):
            raise ValueError(f"features must be 'raw' or 'backbone'; got {self.features!r}.")
        k = self.lora_last_blocks
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise ValueError(f"lora_last_blocks must be an int >= 0 or None; got {k!r}.")
        for name in ("initial", "step", "cycles", "epochs", "img_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}.")
        if not self.strategies or not self.seeds or not self.models:
            raise ValueError("strategies, seeds and models must not be empty.")
        bad = [s for s in self.seeds if not isinstance(s, Integral) or isinstance(s, bool)]
        if bad:
            raise ValueError(f"seeds must be integers; got {bad}.")
        for name in ("strategies", "seeds", "models", "budgets"):
            _check_unique(name, getattr(self, name))
        if self.mode == "one-shot" and (not self.budgets or min(self.budgets) < 1):
            raise ValueError(f"budgets must be >= 1; got {self.budgets}.")
        bad = [s for s in self.seeds if s < 0]
        if bad:
            raise ValueError(f"seeds must be >= 0 (they seed NumPy generators); got {bad}.")
        if self.pool_size is not None and not (_is_int(self.pool_size) and self.pool_size >= 1):
            raise ValueError(f"pool_size must be an int >= 1 or None; got {self.pool_size!r}.")
        size = self.test_size
        if size is not None and not (
            (_is_int(size) and size >= 1)
            or (isinstance(size, Real) and not _is_int(size) and 0 < size < 1)
        ):
            raise ValueError(
                "test_size must be a fraction in (0, 1), a number of samples >= 1 or None; "
                f"got {size!r}."
            )
        return self

    def digest(self):
        """Short hash of every field: the identity of a run's results.

        Returns
        -------
        digest : str
            16 hexadecimal characters.
        """
        fields = {**dataclasses.asdict(self), "engine": ENGINE}
        blob = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_unique(name, values):
    """A value given twice would run (or average) the same cell twice: refuse it."""
    seen, twice = set(), []
    for v in values:
        if v in seen and v not in twice:
            twice.append(v)
        seen.add(v)
    if twice:
        raise ValueError(
            f"{name} lists {', '.join(map(repr, twice))} more than once ({list(values)}); "
            f"give each value once."
        )


def check_targets(targets):
    """``targets`` as a list of floats, each an accuracy in (0, 1]; None stays None."""
    if targets is None:
        return None
    if isinstance(targets, Real):
        targets = [targets]
    out = []
    for t in targets:
        if not isinstance(t, Real) or isinstance(t, bool) or not 0 < t <= 1:
            hint = f" (did you mean {t / 100:g}?)" if isinstance(t, Real) and 1 < t <= 100 else ""
            raise ValueError(
                f"targets are accuracies as fractions in (0, 1], e.g. 0.9 for 90 %; got "
                f"{t!r}{hint}."
            )
        out.append(float(t))
    _check_unique("targets", out)
    return out


# -- pieces -------------------------------------------------------------------------------
def _is_int(value):
    return isinstance(value, Integral) and not isinstance(value, bool)


def _cycle_seed(seed, cycle):
    """Seed of every random draw of one cycle: a pure function of ``(seed, cycle)``.

    A run resumed at cycle ``c`` therefore draws what an uninterrupted run draws there;
    a generator carried across cycles would need its state saved with the checkpoint.
    """
    return int(np.random.SeedSequence([int(seed), int(cycle)]).generate_state(1)[0])


class _InferenceClock:
    """Seconds spent in a model's inference methods (outermost calls only)."""

    def __init__(self):
        self.seconds = 0.0
        self._depth = 0

    def wrap(self, method):
        @functools.wraps(method)
        def timed(*args, **kwargs):
            if self._depth:  # e.g. a Pipeline's predict_proba calling its scaler's transform
                return method(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self._depth -= 1

        return timed


@contextlib.contextmanager
def _timed_inference(estimator):
    """Time the model's :data:`INFERENCE_METHODS` while the block runs.

    The methods are shadowed by timed ones on the instances (the estimator and, for a
    Pipeline, its steps, which a strategy may call through ``pipe[:-1].transform``) and
    restored afterwards. Types, ``hasattr`` answers and results are unchanged, so the
    strategy behaves as without the clock. (Only pickling the model inside the block would
    notice: the timed methods are local functions. No strategy does.)
    """
    from sklearn.pipeline import Pipeline

    clock = _InferenceClock()
    objects, patched = [estimator], []
    while objects:
        obj = objects.pop()
        if not hasattr(obj, "__dict__"):  # "passthrough", None, or a class with __slots__
            continue
        if isinstance(obj, Pipeline):
            objects.extend(step for _, step in obj.steps)
        for name in INFERENCE_METHODS:
            if name in vars(obj):  # already an instance attribute: not ours to shadow
                continue
            try:
                method = getattr(obj, name)
            except AttributeError:  # absent, or unavailable (a Pipeline's available_if)
                continue
            setattr(obj, name, clock.wrap(method))
            patched.append((obj, name))
    try:
        yield clock
    finally:
        for obj, name in patched:
            delattr(obj, name)


def _strategy(name, *, n_instances, config, seed=0):
    from ..selection import make_selector

    params = dict(config.strategy_params.get(name, {}))
    if name == "bilaf" and config.bilaf_cores is not None:
        params.setdefault("n_cores", config.bilaf_cores)
    return make_selector(name, params, n_instances=n_instances, random_state=seed)


def _model(name, config, seed, classes, cache_dir=None, progress=False):
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    from ..classifier import PEALClassifier

    return PEALClassifier(
        config.backbone,
        pretrained=config.pretrained,
        backbone_kwargs=config.backbone_kwargs or None,
        img_size=config.img_size,
        finetune=name,
        max_epochs=config.epochs,
        lora_last_blocks=config.lora_last_blocks or None,
        lr=config.lr,
        classes=classes,
        random_state=seed,
        # the frozen parts' outputs on disk: a resumed run reads the values the killed
        # one computed (bit for bit, whatever batches they came in) instead of redoing them
        cache_dir=None if cache_dir is None else str(cache_dir),
        progress=progress,  # bars over the long passes (the pool's embeddings)
    )


def _features(data, config, cache_dir):
    """(train, test) feature rows for "logreg" and one-shot selection."""
    if config.features == "raw":
        if data.features_train is not None:
            return data.features_train, data.features_test
        if data.kind == "features":
            return data.X_train, data.X_test
        if isinstance(data.X_train, list):
            raise ValueError(
                "features='raw' needs arrays; an image folder needs features='backbone'."
            )
        flat = [
            np.asarray(X, dtype=np.float32).reshape(len(X), -1) for X in (data.X_train, data.X_test)
        ]
        return flat[0], flat[1]
    from ..classifier import BackboneEmbedder

    emb = BackboneEmbedder(
        config.backbone,
        pretrained=config.pretrained,
        img_size=config.img_size,
        backbone_kwargs=config.backbone_kwargs or None,
        cache_dir=cache_dir,
    ).fit()
    return emb.transform(data.X_train), emb.transform(data.X_test)


def _take(X, idx):
    return [X[i] for i in idx] if isinstance(X, list) else X[idx]


def _new_state(model, strategy, seed):
    """An empty cell: what a checkpoint and a finished cell hold."""
    return {
        "model": model,
        "strategy": strategy,
        "seed": seed,
        "n_labels": [],
        "accuracy": [],
        "timing": {name: [] for name in TIMES},
        "time_s": 0.0,
    }


def _record(state, n_labels, accuracy, **times):
    state["n_labels"].append(int(n_labels))
    state["accuracy"].append(float(accuracy))
    for name in TIMES:
        state["timing"][name].append(round(times.get(name, 0.0), 6))


def _run_iterative(data, F_train, F_test, state, config, on_cycle, model_kwargs):
    """Cycles ``len(state["accuracy"])`` to ``config.cycles`` of one cell.

    Cycle 0 fits on the random initial labels; cycle ``c >= 1`` queries ``step`` samples
    with the model of cycle ``c - 1``, refits on every label so far and scores. All the
    draws of cycle ``c`` are seeded from ``(seed, c)`` and every fit restarts from the
    model's seeded initial state, so a cell resumed from ``state`` (the labelled indices
    in query order) continues exactly as it would have without the interruption.
    """
    from ..learner import ActiveLearner

    model_name, seed = state["model"], state["seed"]
    images = model_name != "logreg"
    X_train = data.X_train if images else F_train
    X_test = data.X_test if images else F_test
    y = data.y_train
    n = len(y)
    start = len(state["accuracy"])
    if start > config.cycles:  # killed after its last checkpoint, before the cell was written
        return state
    if start == 0:
        labeled = np.random.default_rng(seed).choice(n, config.initial, replace=False)
    else:
        labeled = np.asarray(state["labeled"], dtype=np.intp)
    pool = np.setdiff1d(np.arange(n), labeled)  # sorted, as np.delete keeps it
    tic = time.perf_counter()
    learner = ActiveLearner(
        _model(model_name, config, seed, data.classes, **model_kwargs),
        # unseeded: each query gets the seed of its cycle (a selector seeded with one
        # int would draw the same positions in every cycle)
        _strategy(state["strategy"], n_instances=config.step, config=config, seed=None),
        _take(X_train, labeled),
        y[labeled],
        random_state=seed,
    )
    if start == 0:
        fit_s = time.perf_counter() - tic
        tic = time.perf_counter()
        accuracy = learner.score(X_test, data.y_test)
        _record(state, len(labeled), accuracy, fit_s=fit_s, score_s=time.perf_counter() - tic)
        state["labeled"] = labeled.tolist()
        on_cycle(state)
    for cycle in range(max(start, 1), config.cycles + 1):
        tic = time.perf_counter()
        with _timed_inference(learner.estimator) as clock:
            idx, _ = learner.query(
                _take(X_train, pool),
                n_instances=config.step,
                random_state=_cycle_seed(seed, cycle),
            )
        query_s = time.perf_counter() - tic
        tic = time.perf_counter()
        learner.teach(_take(X_train, pool[idx]), y[pool[idx]])
        fit_s = time.perf_counter() - tic
        labeled = np.concatenate([labeled, pool[idx]])
        pool = np.delete(pool, idx)
        tic = time.perf_counter()
        accuracy = learner.score(X_test, data.y_test)
        _record(
            state,
            learner.n_labeled,
            accuracy,
            fit_s=fit_s,
            inference_s=clock.seconds,
            selection_s=max(query_s - clock.seconds, 0.0),
            score_s=time.perf_counter() - tic,
        )
        state["labeled"] = labeled.tolist()
        on_cycle(state)
    return state


def _run_one_shot(data, F_train, F_test, state, config, on_cycle, model_kwargs):
    """Budgets ``len(state["accuracy"])`` onwards of one cell; each depends on its
    budget and the seed only. The features are computed once per seed before the cells,
    so ``inference_s`` stays 0."""
    model_name, strategy, seed = state["model"], state["strategy"], state["seed"]
    images = model_name != "logreg"
    for budget in config.budgets[len(state["accuracy"]) :]:
        tic = time.perf_counter()
        selector = _strategy(strategy, n_instances=budget, config=config, seed=seed)
        idx = selector.select(F_train, budget)
        selection_s = time.perf_counter() - tic
        model = _model(model_name, config, seed, data.classes, **model_kwargs)
        fit_s = score_s = 0.0
        if len(np.unique(data.y_train[idx])) < 2:  # one class only: predict it
            accuracy = float(np.mean(data.y_test == data.y_train[idx][0]))
        else:
            tic = time.perf_counter()
            model.fit(_take(data.X_train if images else F_train, idx), data.y_train[idx])
            fit_s = time.perf_counter() - tic
            tic = time.perf_counter()
            accuracy = float(model.score(data.X_test if images else F_test, data.y_test))
            score_s = time.perf_counter() - tic
        _record(state, budget, accuracy, fit_s=fit_s, selection_s=selection_s, score_s=score_s)
        on_cycle(state)
    return state


# -- outputs ---------------------------------------------------------------------------------
def _summaries(cells, config):
    """Mean and std of accuracy per (model, strategy) at each number of labels."""
    out = {}
    for cell in cells:
        key = (cell["model"], cell["strategy"])
        out.setdefault(key, []).append(cell)
    summary = {}
    for key, group in out.items():
        acc = np.asarray([c["accuracy"] for c in group])
        summary[key] = {
            "n_labels": group[0]["n_labels"],
            "mean": acc.mean(axis=0),
            "std": acc.std(axis=0),
            "n_seeds": len(group),
        }
    return summary


def _table(summary, config, targets):
    lines = []
    if config.mode == "one-shot":
        budgets = next(iter(summary.values()))["n_labels"]
        lines.append("| model | strategy | " + " | ".join(f"B={b}" for b in budgets) + " |")
        lines.append("|---|---|" + "---|" * len(budgets))
        for (model, strategy), s in sorted(summary.items()):
            cells = [
                f"{100 * m:.1f} ± {100 * d:.1f}" for m, d in zip(s["mean"], s["std"], strict=True)
            ]
            lines.append(f"| {model} | {strategy} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
    lines.append(
        "| model | strategy | final accuracy % | "
        + " | ".join(f"labels to reach {100 * t:.1f} %" for t in targets)
        + " |"
    )
    lines.append("|---|---|---|" + "---|" * len(targets))
    for (model, strategy), s in sorted(summary.items()):
        need = []
        for t in targets:
            hit = np.flatnonzero(s["mean"] >= t - 1e-12)
            need.append(str(s["n_labels"][hit[0]]) if hit.size else f"> {s['n_labels'][-1]}")
        final = f"{100 * s['mean'][-1]:.1f} ± {100 * s['std'][-1]:.1f}"
        lines.append(f"| {model} | {strategy} | {final} | " + " | ".join(need) + " |")
    return "\n".join(lines) + "\n"


def _timing_table(cells, config):
    """Mean seconds per query cycle (per budget in one-shot mode) of each (model, strategy)."""
    unit = "cycle" if config.mode == "iterative" else "budget"
    first = 1 if config.mode == "iterative" else 0  # cycle 0 fits the initial labels only
    groups = {}
    for cell in cells:
        groups.setdefault((cell["model"], cell["strategy"]), []).append(cell)
    lines = [
        f"Mean seconds per {unit}"
        + (f" (cycles 1 to {config.cycles}; cycle 0 is the initial fit)" if first else "")
        + ": fit, pool inference (the model's predict_proba / transform during the query), "
        "selection (the rest of the query), test (accuracy on the test samples).",
        "",
        "| model | strategy | fit s | pool inference s | selection s | test s |",
        "|---|---|---|---|---|---|",
    ]
    for (model, strategy), group in sorted(groups.items()):
        means = [np.mean([t for c in group for t in c["timing"][name][first:]]) for name in TIMES]
        shown = [f"{m:.1f}" if m >= 10 else f"{m:.3f}" for m in means]
        lines.append(f"| {model} | {strategy} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def _plot(summary, config, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (model, strategy), s in sorted(summary.items()):
        x, m, d = np.asarray(s["n_labels"]), 100 * s["mean"], 100 * s["std"]
        label = strategy if len(config.models) == 1 else f"{strategy} ({model})"
        ax.plot(x, m, marker="o", label=label)
        ax.fill_between(x, m - d, m + d, alpha=0.15)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{config.dataset}: {config.mode}, mean ± std over {len(config.seeds)} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- the run ----------------------------------------------------------------------------------
def simulate(config, out, *, force=False, targets=None, progress=True, log=print):
    """Run (or resume) a simulation and write its results to the folder ``out``.

    Parameters
    ----------
    config : SimulationConfig
    out : str or path-like
        Results folder: ``cells/`` (one JSON per finished cell, one checkpoint per
        unfinished cell, rewritten after every cycle), ``results.json``, ``results.csv``,
        ``table.md`` and ``curves.png`` (with matplotlib installed). Running again in the
        same folder keeps the finished cells and continues each unfinished one after its
        last finished cycle, with the numbers an uninterrupted run gives.
    force : bool, default=False
        Start over in a folder that holds results of another configuration.
    targets : list of float or None
        Accuracies for the "labels needed" table, as fractions in (0, 1] (0.9 is 90 %;
        a value above 1 is refused, not read as a percentage). Default: random's final
        mean accuracy when random ran, else the best final mean.
    progress : bool, default=True
    log : callable, default=print

    Returns
    -------
    results : dict
        What ``results.json`` holds (``config``, ``targets``, ``cells``: one dict per
        (model, strategy, seed) with ``n_labels`` and ``accuracy`` per cycle or budget,
        ``timing`` (lists of ``fit_s``, ``inference_s``, ``selection_s`` and ``score_s``
        aligned with them), ``labeled`` (iterative mode: the pool positions labelled, in
        pick order) and ``time_s``; ``wall_time_s``), plus ``table`` (the markdown
        tables: accuracy, then mean time per cycle) and ``plot`` (the path of
        ``curves.png``, None without matplotlib).

    Examples
    --------
    >>> import tempfile
    >>> from peal_sk.experiments import SimulationConfig, simulate
    >>> config = SimulationConfig(strategies=["random", "margin"], seeds=[0], cycles=2)
    >>> with tempfile.TemporaryDirectory() as out:
    ...     results = simulate(config, out, progress=False, log=lambda message: None)
    >>> [(cell["strategy"], cell["n_labels"]) for cell in results["cells"]]
    [('random', [10, 20, 30]), ('margin', [10, 20, 30])]
    """
    config.validate()
    targets = check_targets(targets)
    # the data is checked before anything is written to ``out``: a run that fails here
    # leaves no config.json behind to refuse the corrected rerun
    first = _load(config, config.seeds[0])
    _check_sizes(first, config)
    out = Path(out)
    cells_dir = out / "cells"
    stamp = out / "config.json"
    digest = config.digest()
    if stamp.exists():
        stamped = json.loads(stamp.read_text())
        previous = stamped.get("digest")
        if previous != digest:
            if not force:
                older = (
                    f"an earlier version of the simulation engine ({stamped.get('engine', 1)}, "
                    f"this one {ENGINE}: other random draws)"
                    if stamped.get("engine", 1) != ENGINE
                    else "another configuration"
                )
                raise FileExistsError(
                    f"{out} holds results of {older} (digest {previous}, this run {digest}); "
                    "choose another --out or pass --force to replace them."
                )
            for f in cells_dir.glob("*.json"):  # finished cells and checkpoints
                f.unlink()
    cells_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(
        stamp,
        json.dumps(
            {"digest": digest, "engine": ENGINE, "config": dataclasses.asdict(config)}, indent=2
        ),
    )
    log(
        f"data: {config.dataset}, a pool of {len(first.y_train)} training samples, "
        f"{len(first.y_test)} test samples ("
        + ("its own test split" if first.own_test_split else "split from its samples")
        + f"; seed {config.seeds[0]})"
    )

    t0 = time.perf_counter()
    grid = [
        (model, strategy, seed)
        for model in config.models
        for strategy in config.strategies
        for seed in config.seeds
    ]
    todo = [g for g in grid if not (cells_dir / _cell_name(config, *g)).exists()]
    for g in grid:  # a kill between a cell's two last writes leaves a stale checkpoint
        if g not in todo:
            _checkpoint_path(cells_dir, config, *g).unlink(missing_ok=True)
    states = {g: _load_checkpoint(_checkpoint_path(cells_dir, config, *g), g, log) for g in todo}
    partial = [st for st in states.values() if st is not None]
    if len(todo) < len(grid) or partial:
        log(
            f"resuming: {len(grid) - len(todo)} of {len(grid)} cells already done in {out}"
            + (f"; {len(partial)} continue from their last finished cycle" if partial else "")
        )
    data_by_seed, ready = {config.seeds[0]: (first, None, None)}, set()
    bar = None
    if progress and todo:
        try:
            from tqdm.auto import tqdm

            per_cell = config.cycles + 1 if config.mode == "iterative" else len(config.budgets)
            unit = "cycle" if config.mode == "iterative" else "budget"
            bar = tqdm(total=len(todo) * per_cell, desc="simulate", unit=unit)
            bar.update(sum(len(st["accuracy"]) for st in partial))
        except ImportError:
            bar = None
    model_kwargs = {"cache_dir": out / "cache", "progress": bar is not None}
    for model, strategy, seed in todo:
        if seed not in data_by_seed or seed not in ready:
            data = data_by_seed[seed][0] if seed in data_by_seed else None
            if data is None:
                data = _load(config, seed)
                _check_sizes(data, config)
            needs_features = config.mode == "one-shot" or "logreg" in config.models
            F = _features(data, config, out / "cache") if needs_features else (None, None)
            data_by_seed = {seed: (data, *F)}  # one split in memory at a time
            ready = {seed}
        data, F_train, F_test = data_by_seed[seed]
        state = states[(model, strategy, seed)] or _new_state(model, strategy, seed)
        checkpoint = _checkpoint_path(cells_dir, config, model, strategy, seed)
        run = _run_iterative if config.mode == "iterative" else _run_one_shot
        on_cycle = _on_cycle(checkpoint, state, bar, log)
        cell = run(data, F_train, F_test, state, config, on_cycle, model_kwargs)
        write_atomic(cells_dir / _cell_name(config, model, strategy, seed), json.dumps(cell))
        checkpoint.unlink(missing_ok=True)
        if bar is None:
            log(f"done {model}/{strategy}/seed {seed}: final accuracy {cell['accuracy'][-1]:.3f}")
    if bar is not None:
        bar.close()
    cells = [json.loads((cells_dir / _cell_name(config, *g)).read_text()) for g in grid]
    return _write_outputs(config, cells, out, targets, time.perf_counter() - t0)


def _cell_name(config, model, strategy, seed):
    return f"{config.mode}-{model}-{strategy}-seed{seed}.json"


def _load(config, seed):
    return load_dataset(
        config.dataset, seed=seed, test_size=config.test_size, pool_size=config.pool_size
    )


# -- checkpoints: one per unfinished cell, rewritten after every cycle -------------------------
def _checkpoint_path(cells_dir, config, model, strategy, seed):
    name = _cell_name(config, model, strategy, seed)
    return cells_dir / name.replace(".json", ".checkpoint.json")


def _save_checkpoint(path, state):
    write_atomic(path, json.dumps(state))


def _load_checkpoint(path, cell, log):
    """The state saved after a cell's last finished cycle, or None (start the cell)."""
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        ok = (state["model"], state["strategy"], state["seed"]) == tuple(cell) and all(
            len(state["timing"][name]) == len(state["accuracy"]) == len(state["n_labels"])
            for name in TIMES
        )
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:  # never written by this engine (writes are atomic): not trusted, redone
        log(f"ignoring {path}, which is not a checkpoint of cell {cell}; the cell starts over")
        return None
    return state


def _on_cycle(path, state, bar, log):
    """What happens after each finished cycle: the checkpoint, then the progress."""
    started, before = time.perf_counter(), state["time_s"]

    def on_cycle(state):
        state["time_s"] = round(before + time.perf_counter() - started, 3)
        _save_checkpoint(path, state)
        if bar is not None:
            bar.update(1)
            return
        times = {name: state["timing"][name][-1] for name in TIMES}
        log(
            f"{state['model']}/{state['strategy']}/seed {state['seed']}: "
            f"{state['n_labels'][-1]} labels, accuracy {state['accuracy'][-1]:.3f} "
            f"(fit {times['fit_s']:.2f} s, pool inference {times['inference_s']:.2f} s, "
            f"selection {times['selection_s']:.2f} s, test {times['score_s']:.2f} s)"
        )

    return on_cycle


def _check_sizes(data, config):
    n = len(data.y_train)
    if config.mode == "iterative":
        need = config.initial + config.step * config.cycles
        if need > n:
            pool = "" if config.pool_size is None else f" (pool_size={config.pool_size})"
            raise ValueError(
                f"initial {config.initial} + cycles {config.cycles} x step {config.step} = "
                f"{need} labels exceed the {n} training images of {config.dataset}{pool}."
            )
    elif max(config.budgets) > n:
        raise ValueError(
            f"budgets {config.budgets} exceed the {n} training images of {config.dataset}."
        )


def _write_outputs(config, cells, out, targets, elapsed):
    summary = _summaries(cells, config)
    if targets is None:
        finals = {k: s["mean"][-1] for k, s in summary.items()}
        randoms = [v for (m, st), v in finals.items() if st == "random"]
        targets = [max(randoms)] if randoms else [max(finals.values())]
    table = _table(summary, config, targets) + "\n" + _timing_table(cells, config)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["mode", "model", "strategy", "seed", "n_labels", "accuracy"])
    for c in cells:
        for n, a in zip(c["n_labels"], c["accuracy"], strict=True):
            writer.writerow([config.mode, c["model"], c["strategy"], c["seed"], n, f"{a:.6f}"])
    results = {
        "config": dataclasses.asdict(config),
        "targets": [float(t) for t in targets],
        "cells": cells,
        "wall_time_s": round(elapsed, 1),
    }
    write_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    write_atomic(out / "results.csv", buf.getvalue())
    write_atomic(out / "table.md", table)
    results["table"] = table
    results["plot"] = _plot(summary, config, out / "curves.png")
    return results
