"""Root pytest configuration: doctests of the torch half only where torch is installed."""

import importlib.util

collect_ignore_glob = []
if importlib.util.find_spec("torch") is None:  # core install: the selectors only
    collect_ignore_glob.append("peal_sk/classifier/*")
