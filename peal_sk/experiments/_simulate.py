"""Pool-based active-learning simulations: the engine behind ``peal-sk simulate``.

A run is a grid of cells, one per (mode, model, strategy, seed). Each finished cell is
written to ``<out>/cells/`` at once (atomically), so an interrupted run resumes where it
stopped; a results folder made with another configuration is never mixed into or
overwritten without ``force=True``.
"""

# SPDX-License-Identifier: BSD-3-Clause

import csv
import dataclasses
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
    test_size : float
        Test fraction, for datasets without a test split of their own.

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
    initial: int = 10
    step: int = 10
    cycles: int = 8
    budgets: list = field(default_factory=lambda: [20, 40, 80])
    bilaf_cores: object = None
    test_size: float = 0.25
    strategy_params: dict = field(default_factory=dict)

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
        return self

    def digest(self):
        """Short hash of every field: the identity of a run's results.

        Returns
        -------
        digest : str
            16 hexadecimal characters.
        """
        fields = dataclasses.asdict(self)
        if not fields["strategy_params"]:  # runs from before the option keep their digest
            del fields["strategy_params"]
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
def _strategy(name, *, n_instances, config, seed=0):
    from ..selection import make_selector

    params = dict(config.strategy_params.get(name, {}))
    if name == "bilaf" and config.bilaf_cores is not None:
        params.setdefault("n_cores", config.bilaf_cores)
    return make_selector(name, params, n_instances=n_instances, random_state=seed)


def _model(name, config, seed, classes):
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
        lr=config.lr,
        classes=classes,
        random_state=seed,
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


def _run_iterative(data, F_train, F_test, model_name, strategy, seed, config):
    from ..learner import ActiveLearner

    images = model_name != "logreg"
    X_train = data.X_train if images else F_train
    X_test = data.X_test if images else F_test
    y = data.y_train
    n = len(y)
    rng = np.random.default_rng(seed)
    initial = rng.choice(n, size=config.initial, replace=False)
    pool = np.setdiff1d(np.arange(n), initial)
    learner = ActiveLearner(
        _model(model_name, config, seed, data.classes),
        # unseeded: the learner (random_state=seed) seeds each query afresh; a selector
        # seeded with the int would draw the same positions in every cycle
        _strategy(strategy, n_instances=config.step, config=config, seed=None),
        _take(X_train, initial),
        y[initial],
        random_state=seed,
    )
    n_labels, acc = [config.initial], [float(learner.score(X_test, data.y_test))]
    for _ in range(config.cycles):
        idx, _ = learner.query(_take(X_train, pool), n_instances=config.step)
        learner.teach(_take(X_train, pool[idx]), y[pool[idx]])
        pool = np.delete(pool, idx)
        n_labels.append(learner.n_labeled)
        acc.append(float(learner.score(X_test, data.y_test)))
    return n_labels, acc


def _run_one_shot(data, F_train, F_test, model_name, strategy, seed, config):
    images = model_name != "logreg"
    n_labels, acc = [], []
    for budget in config.budgets:
        selector = _strategy(strategy, n_instances=budget, config=config, seed=seed)
        idx = selector.select(F_train, budget)
        model = _model(model_name, config, seed, data.classes)
        if len(np.unique(data.y_train[idx])) < 2:  # one class only: predict it
            accuracy = float(np.mean(data.y_test == data.y_train[idx][0]))
        else:
            model.fit(_take(data.X_train if images else F_train, idx), data.y_train[idx])
            accuracy = float(model.score(data.X_test if images else F_test, data.y_test))
        n_labels.append(int(budget))
        acc.append(accuracy)
    return n_labels, acc


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
        Results folder: ``cells/`` (one JSON per finished cell), ``results.json``,
        ``results.csv``, ``table.md`` and ``curves.png`` (with matplotlib installed).
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
        ``wall_time_s``), plus ``table`` (the markdown table) and ``plot`` (the path of
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
    first = load_dataset(config.dataset, seed=config.seeds[0], test_size=config.test_size)
    _check_sizes(first, config)
    out = Path(out)
    cells_dir = out / "cells"
    stamp = out / "config.json"
    digest = config.digest()
    if stamp.exists():
        previous = json.loads(stamp.read_text()).get("digest")
        if previous != digest:
            if not force:
                raise FileExistsError(
                    f"{out} holds results of another configuration (digest {previous}, this "
                    f"run {digest}); choose another --out or pass --force to replace them."
                )
            for f in cells_dir.glob("*.json"):
                f.unlink()
    cells_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(
        stamp, json.dumps({"digest": digest, "config": dataclasses.asdict(config)}, indent=2)
    )

    t0 = time.perf_counter()
    grid = [
        (model, strategy, seed)
        for model in config.models
        for strategy in config.strategies
        for seed in config.seeds
    ]
    todo = [g for g in grid if not (cells_dir / _cell_name(config, *g)).exists()]
    if len(todo) < len(grid):
        log(f"resuming: {len(grid) - len(todo)} of {len(grid)} cells already done in {out}")
    data_by_seed, ready = {config.seeds[0]: (first, None, None)}, set()
    bar = None
    if progress and todo:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="cells", unit="cell")
        except ImportError:
            bar = None
    for model, strategy, seed in todo:
        if seed not in data_by_seed or seed not in ready:
            data = data_by_seed[seed][0] if seed in data_by_seed else None
            if data is None:
                data = load_dataset(config.dataset, seed=seed, test_size=config.test_size)
                _check_sizes(data, config)
            needs_features = config.mode == "one-shot" or "logreg" in config.models
            F = _features(data, config, out / "cache") if needs_features else (None, None)
            data_by_seed = {seed: (data, *F)}  # one split in memory at a time
            ready = {seed}
        data, F_train, F_test = data_by_seed[seed]
        tc = time.perf_counter()
        run = _run_iterative if config.mode == "iterative" else _run_one_shot
        n_labels, acc = run(data, F_train, F_test, model, strategy, seed, config)
        cell = {
            "model": model,
            "strategy": strategy,
            "seed": seed,
            "n_labels": [int(n) for n in n_labels],
            "accuracy": acc,
            "time_s": round(time.perf_counter() - tc, 3),
        }
        write_atomic(cells_dir / _cell_name(config, model, strategy, seed), json.dumps(cell))
        if bar is not None:
            bar.update(1)
        else:
            log(f"done {model}/{strategy}/seed {seed}: final accuracy {acc[-1]:.3f}")
    if bar is not None:
        bar.close()
    cells = [json.loads((cells_dir / _cell_name(config, *g)).read_text()) for g in grid]
    return _write_outputs(config, cells, out, targets, time.perf_counter() - t0)


def _cell_name(config, model, strategy, seed):
    return f"{config.mode}-{model}-{strategy}-seed{seed}.json"


def _check_sizes(data, config):
    n = len(data.y_train)
    if config.mode == "iterative":
        need = config.initial + config.step * config.cycles
        if need > n:
            raise ValueError(
                f"initial {config.initial} + cycles {config.cycles} x step {config.step} = "
                f"{need} labels exceed the {n} training images of {config.dataset}."
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
    table = _table(summary, config, targets)
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
