"""Saving and loading what PEALClassifier's training changed (adapters, head)."""

# SPDX-License-Identifier: BSD-3-Clause

import os

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._modes import save_tensors
from ._torch_utils import resolve_precision

__all__ = []


class _AdapterFilesMixin:
    """``save_adapters`` / ``load_adapters`` of :class:`PEALClassifier`."""

    def save_adapters(self, path, *, overwrite=False):
        """Save what training changed: LoRA adapters (peft format) and the head.

        The directory gets ``adapter_model.safetensors`` (peft's adapter state dict;
        the whole backbone's weights in ``backbone.safetensors`` for ``finetune="full"``),
        ``head.safetensors`` and ``peal_sk.json`` (parameters, classes, adapted layers).
        The pretrained backbone itself is not copied: :meth:`load_adapters` rebuilds it
        from the same parameters. Pickle / joblib save the whole estimator instead.

        Trained with an ``accelerator`` on several processes, call it on every process
        (it waits for all of them): the main process writes, the others return the same
        path once it is written.

        Parameters
        ----------
        path : str or path-like
            A directory; it must not exist or be empty unless ``overwrite=True``.
        overwrite : bool, default=False

        Returns
        -------
        path : pathlib.Path
        """
        from pathlib import Path

        check_is_fitted(self, "net_")
        if not isinstance(self.backbone, str):
            raise ValueError(
                "save_adapters needs a named backbone (a timm or registry name) to rebuild "
                f"it on load; got backbone={self.backbone!r}. Pickle the estimator instead."
            )
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(
                f"{path} exists and is not empty; pass overwrite=True to replace it."
            )
        accelerator = getattr(self, "accelerator_", None)
        if accelerator is None:
            return self._write_adapters(path)
        accelerator.wait_for_everyone()  # every process checked the path before any write
        try:
            if accelerator.is_main_process:
                self._write_adapters(path)
        finally:
            accelerator.wait_for_everyone()  # the others return once it is written
        return path

    def _write_adapters(self, path):
        import json
        import shutil

        # callbacks and the accelerator belong to this run, not to the saved model
        params = {
            k: v for k, v in self.get_params().items() if k not in ("callbacks", "accelerator")
        }
        for name in ("checkpoint_path", "cache_dir"):
            value = params.get(name)
            params[name] = None if value is None else os.fspath(value)
        meta = {
            "format": 1,
            "params": params,
            "classes": self.classes_.tolist(),
            "targets": list(self.targets_),
            "n_features_out": int(self.n_features_out_),
        }
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        mode = self._mode()
        module = self._trained_module()
        save_tensors(mode.head(module).state_dict(), tmp / "head")
        mode.save(module, tmp)
        (tmp / "peal_sk.json").write_text(json.dumps(meta, indent=2) + "\n")
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
        return path

    @classmethod
    def load_adapters(cls, path):
        """Rebuild a fitted estimator from :meth:`save_adapters` output.

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        estimator : PEALClassifier
            Predicts like the saved one.
        """
        import json
        from pathlib import Path

        from safetensors.torch import load_file

        path = Path(path)
        meta_file = path / "peal_sk.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{meta_file} not found: not a save_adapters directory.")
        meta = json.loads(meta_file.read_text())
        est = cls(**meta["params"])
        est._validate_params()
        est.classes_ = np.asarray(meta["classes"])
        backbone, data_config = est._backbone_and_config()
        est.data_config_ = data_config
        est.n_features_out_ = int(meta["n_features_out"])
        est.precision_ = resolve_precision(est.precision, est._device(), allow_fp16=False)
        est.targets_ = list(meta["targets"])
        est.engine_ = est.engine_precision_ = None
        mode = est._mode()
        module = mode.load(est, backbone, path)
        mode.head(module).load_state_dict(load_file(path / "head.safetensors"))
        est.prefix_cached_ = getattr(module, "split", None) is not None
        est.net_ = est.initialize_net(module, np.arange(len(est.classes_)))
        est.net_.initialize()
        return est
