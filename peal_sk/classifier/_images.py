"""Image input of the image classifier: every check up front, decoding only on access.

:func:`check_images` validates what the user passed as ``X`` and returns an
:class:`ImageSource`, a uniform and lazy view of ``n`` images; :class:`ImageDataset` turns it
into ``(tensor, target)`` pairs through the eval-time preprocessing built by
:func:`make_transform` from the backbone's pretrained data config.

Accepted inputs
---------------
numpy arrays (and anything ``np.asarray`` turns into one: torch tensors, DataFrames)

* 2-D numeric ``(n, n_features)``: **feature vectors** (kind ``"features"``), for
  backbones that take vectors. No image preprocessing: :class:`ImageDataset` returns each
  row as a float32 tensor. NaN or infinite values raise ``ValueError``. A single grayscale
  image ``(H, W)`` is therefore read as features: pass it as ``X[None]`` (3-D).
* 3-D ``(n, H, W)``: grayscale images, converted to RGB (the gray value in all three
  channels). A single colour image ``(H, W, 3)`` must be passed as ``X[None]``.
* 4-D: channels-last ``(n, H, W, C)`` when ``C = shape[-1]`` is 1, 3 or 4, otherwise
  channels-first ``(n, C, H, W)`` when ``shape[1]`` is 1, 3 or 4. **When both fit**
  (e.g. ``(n, 3, 4, 3)``) **channels-last wins**: transpose a small channels-first array
  yourself to be sure. ``C = 1`` is grayscale, ``C = 3`` RGB, ``C = 4`` RGBA whose alpha
  channel is dropped (not composited). Any other channel count raises ``ValueError``.
* 1-D array of ``str`` / ``os.PathLike`` (or a one-column 2-D array of them, as from a
  DataFrame): image file paths (kind ``"paths"``). A 1-D object array of PIL images or
  arrays follows the list rules below.
* 1-D numeric arrays and arrays of 5 or more dimensions raise ``ValueError``.

Pixel values (arrays and list elements alike)

* ``uint8``: 0-255.
* other integer dtypes: accepted when every value lies in 0-255 (so ``np.array`` of
  Python ints works); otherwise ``ValueError``.
* float: must lie in ``[0, 1]``, otherwise ``ValueError`` suggesting uint8 or dividing by
  255 (do not normalise yourself: the classifier applies the backbone's mean and std).
  Float images are quantised to 8 bits (``round(x * 255)``) when converted to a PIL
  image, so ``X_uint8`` and ``X_uint8 / 255`` give identical tensors.
* NaN or infinite values raise ``ValueError``; boolean, complex, string (other than
  paths), object (other than the sequences below) and other dtypes raise ``TypeError``.

Python lists and tuples

* all ``str`` / ``os.PathLike``: image file paths (kind ``"paths"``);
* all ``PIL.Image.Image``: kind ``"pil"`` (converted with ``.convert("RGB")`` on access);
* all numpy arrays (or torch tensors), each ``H x W``, ``H x W x C`` or ``C x H x W`` with
  the same channel rules as above (channels-last wins): kind ``"list"``. Images may have
  different sizes; mixed sizes are handled because every image is resized by the transform;
* numbers or nested lists: converted with ``np.asarray`` and checked as an array;
* a mix of these raises ``TypeError`` naming the first offending index and its type.

Image files

* every file must exist when :func:`check_images` is called; otherwise
  ``FileNotFoundError`` lists up to 10 missing paths and their count. A directory raises
  ``ValueError``: folders are not searched here.
* files are decoded on access with ``PIL.Image.open(path).convert("RGB")`` (alpha dropped,
  palettes expanded); a file that cannot be decoded raises ``ValueError`` naming the file
  and PIL's error.

Empty input (0 images) raises ``ValueError("X is empty ...")``.
"""

# SPDX-License-Identifier: BSD-3-Clause

import numbers
import os
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
import torch
from PIL import Image

__all__ = ["ImageDataset", "ImageSource", "check_images", "make_transform"]

#: The kinds of :class:`ImageSource`.
KINDS = ("features", "array", "paths", "pil", "list")
#: Accepted channel counts: gray, RGB, RGBA.
_CHANNELS = (1, 3, 4)
#: At most this many missing files are listed in the error message.
_MAX_LISTED = 10
#: Interpolation names that timm's eval transform understands.
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
_DATA_CONFIG_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct")

_ACCEPTED = (
    "a 2-D array of features (n, n_features), a 3-D (n, H, W) grayscale or 4-D "
    "(n, H, W, C) / (n, C, H, W) image array with C in (1, 3, 4), or a list of file paths, "
    "PIL images or per-image arrays"
)


# --------------------------------------------------------------------------- helpers


def _type_name(x):
    return type(x).__name__


def _check_pixel_dtype(arr, name):
    """Images must be real-valued integers or floats."""
    kind = arr.dtype.kind
    if kind == "b":
        raise TypeError(
            f"{name} has boolean dtype; images must be uint8 (0-255) or float (0-1). "
            f"Convert a mask with {name}.astype(np.uint8) * 255."
        )
    if kind == "c":
        # ValueError and this wording: scikit-learn's convention for complex input
        raise ValueError(f"Complex data not supported: {name} has dtype {arr.dtype}.")
    if kind not in "uif":
        raise TypeError(
            f"{name} has unsupported dtype {arr.dtype}; expected uint8 (0-255) or float "
            f"(0-1) pixels, or {_ACCEPTED}."
        )


def _check_pixel_values(arr, name):
    """uint8 as is; other integers within 0-255; floats finite and within [0, 1]."""
    if arr.dtype == np.uint8:
        return
    lo, hi = np.min(arr), np.max(arr)
    if arr.dtype.kind == "f":
        if not (np.isfinite(lo) and np.isfinite(hi)):
            bad = tuple(int(j) for j in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(
                f"{name} contains NaN or infinite values (first at index {bad}: {arr[bad]!r})."
            )
        if lo < 0 or hi > 1:
            raise ValueError(
                f"float {name} must hold pixel values in [0, 1]; got values in "
                f"[{float(lo):.4g}, {float(hi):.4g}]. Pass uint8 images (0-255) or divide "
                "by 255; do not normalise them yourself (the classifier applies the "
                "backbone's mean and std)."
            )
    elif lo < 0 or hi > 255:
        raise ValueError(
            f"integer {name} (dtype {arr.dtype}) must hold pixel values in 0-255; got "
            f"values in [{int(lo)}, {int(hi)}]. Convert to uint8 (0-255) or to float in "
            "[0, 1] (e.g. 16-bit images: X / 65535)."
        )


def _channels_last(arr, name, *, axis):
    """Move the channel axis of an image array to the end.

    ``axis`` is where channels-first images keep their channels (1 for a batch, 0 for a
    single image). Channels-last wins when both layouts fit.
    """
    if arr.shape[-1] in _CHANNELS:
        return arr
    if arr.shape[axis] in _CHANNELS:
        return np.moveaxis(arr, axis, -1)
    if axis == 1:
        layouts = "channels-last (n, H, W, C) or channels-first (n, C, H, W)"
    else:
        layouts = "H x W, channels-last H x W x C or channels-first C x H x W"
    raise ValueError(
        f"{name} has shape {arr.shape}, which has no channel axis of size 1, 3 or 4: images "
        f"must be {layouts} with C in (1, 3, 4) (gray, RGB, RGBA); got {arr.shape[-1]} on "
        f"the last axis and {arr.shape[axis]} on axis {axis}."
    )


def _check_image_size(height, width, name):
    if height == 0 or width == 0:
        raise ValueError(f"{name} has images of size {height} x {width}; they must not be empty.")


def _as_numpy(x):
    """A torch tensor as a numpy array (detached, on the CPU); anything else unchanged."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x


def _element_kind(x):
    """The ImageSource kind a list element belongs to, or None."""
    if isinstance(x, str | os.PathLike):
        return "paths"
    if isinstance(x, Image.Image):
        return "pil"
    if isinstance(x, np.ndarray | torch.Tensor):
        return "list"
    return None


def _to_pil(img):
    """A validated (H, W) or (H, W, C) array as an RGB PIL image."""
    if img.ndim == 3:
        img = img[..., 0] if img.shape[-1] == 1 else img[..., :3]
    if img.dtype != np.uint8:
        if img.dtype.kind == "f":
            img = np.rint(img.astype(np.float64) * 255.0)
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(img))


def _open_path(path, label):
    """Decode one image file as RGB; errors name the file."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{label}: image file {path!r} does not exist any more ({exc})."
        ) from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(
            f"{label}: cannot decode image file {path!r}: {_type_name(exc)}: {exc}"
        ) from exc


def _pil_rgb(im, label):
    if im.mode == "RGB":
        return im
    try:
        return im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(
            f"{label}: cannot convert PIL image (mode {im.mode!r}) to RGB: {_type_name(exc)}: {exc}"
        ) from exc


def _to_tensor(img):
    """RGB PIL image -> float32 tensor (3, H, W) in [0, 1], without resizing or norm."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


# --------------------------------------------------------------------------- source


class ImageSource:
    """Uniform, lazy access to ``n`` images.

    Build it with :func:`check_images`, which validates the input; the constructor does
    not.

    Parameters
    ----------
    kind : {"features", "array", "paths", "pil", "list"}
        What ``data`` holds.
    data : ndarray or list
        * ``"features"``: 2-D numeric array ``(n, n_features)``;
        * ``"array"``: ``(n, H, W)`` grayscale or channels-last ``(n, H, W, C)`` array,
          C in (1, 3, 4), uint8 or validated integers / floats;
        * ``"paths"``: list of file paths (``str``);
        * ``"pil"``: list of PIL images;
        * ``"list"``: list of ``(H, W)`` or channels-last ``(H, W, C)`` arrays.
    name : str, default="X"
        Name of the user's parameter, used in error messages.

    Attributes
    ----------
    kind : str
    data : ndarray or list
    name : str
    """

    def __init__(self, kind, data, *, name="X"):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got kind={kind!r}.")
        self.kind = kind
        self.data = data
        self.name = name

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        return f"ImageSource(kind={self.kind!r}, n={len(self)})"

    def _index(self, i):
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TypeError(f"image index must be an int; got {i!r}.")
        n, i = len(self), int(i)
        if not -n <= i < n:
            raise IndexError(f"image index {i} is out of range for {self.name} with {n} images.")
        return i % n

    def __getitem__(self, i):
        """RGB PIL image ``i``, decoded or converted now.

        Raises ``TypeError`` for kind ``"features"`` (use ``data[i]``) and ``ValueError``
        naming the file for a file that cannot be decoded.
        """
        i = self._index(i)
        label = f"{self.name}[{i}]"
        if self.kind == "features":
            raise TypeError(
                f"{self.name} holds feature vectors (kind 'features'), not images; read "
                "rows from `.data` instead."
            )
        if self.kind == "paths":
            return _open_path(self.data[i], label)
        if self.kind == "pil":
            return _pil_rgb(self.data[i], label)
        return _to_pil(self.data[i])

    def subset(self, indices):
        """The same kind of source restricted to ``indices``.

        Parameters
        ----------
        indices : array-like of int or bool
            Integer positions (negative ones count from the end) or a boolean mask of
            length ``len(self)``.

        Returns
        -------
        ImageSource
        """
        n = len(self)
        idx = np.asarray(indices)
        if idx.dtype.kind == "b":
            if idx.shape != (n,):
                raise ValueError(
                    f"a boolean mask for {self.name} must have shape ({n},); got {idx.shape}."
                )
            idx = np.flatnonzero(idx)
        elif idx.size == 0:
            idx = idx.astype(np.intp)
        elif idx.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers or a boolean mask; got dtype {idx.dtype}.")
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D; got shape {idx.shape}.")
        bad = np.flatnonzero((idx < -n) | (idx >= n))
        if bad.size:
            raise IndexError(
                f"indices contains {idx[bad[0]]}, out of range for {self.name} with {n} "
                f"images ({bad.size} bad indices)."
            )
        idx = np.where(idx < 0, idx + n, idx).astype(np.intp)
        if isinstance(self.data, np.ndarray):
            data = self.data[idx]
        else:
            data = [self.data[j] for j in idx]
        return ImageSource(self.kind, data, name=self.name)


# --------------------------------------------------------------------------- checks


def _empty(name):
    return ValueError(f"{name} is empty (0 images); pass at least one image.")


def _check_features(arr, name):
    if arr.shape[0] == 0:
        raise _empty(name)
    if arr.shape[1] == 0:
        raise ValueError(
            f"{name} has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            r, c = np.argwhere(~np.isfinite(arr))[0]
            raise ValueError(
                f"{name} contains NaN or infinite values (first at row {r}, column {c}: "
                f"{arr[r, c]!r})."
            )
        big = np.abs(arr).max()
        if big > np.finfo(np.float32).max:
            raise ValueError(
                f"{name} has values too large for float32 (max |value| {float(big):.4g})."
            )
    return ImageSource("features", arr, name=name)


def _check_paths(items, name):
    paths = [os.fspath(p) for p in items]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        listed = ", ".join(repr(p) for p in missing[:_MAX_LISTED])
        more = len(missing) - _MAX_LISTED
        if more > 0:
            listed += f", ... and {more} more"
        hint = ""
        if any(not os.path.isabs(p) for p in missing):
            hint = f" Relative paths are resolved from the current directory {os.getcwd()!r}."
        raise FileNotFoundError(
            f"{name}: {len(missing)} of {len(paths)} image files do not exist: {listed}.{hint}"
        )
    for i, p in enumerate(paths):
        if os.path.isdir(p):
            raise ValueError(
                f"{name}[{i}] = {p!r} is a directory; pass image files (folders are not searched)."
            )
    return ImageSource("paths", paths, name=name)


def _check_one_image(img, label):
    img = _as_numpy(img)
    _check_pixel_dtype(img, label)
    if img.ndim == 3:
        out = _channels_last(img, label, axis=0)
    elif img.ndim == 2:
        out = img
    else:
        raise ValueError(
            f"{label} has shape {img.shape}; each image must be H x W, H x W x C or C x H x W "
            "with C in (1, 3, 4)."
        )
    _check_image_size(out.shape[0], out.shape[1], label)
    _check_pixel_values(img, label)
    return out


def _check_sequence(items, name):
    if len(items) == 0:
        raise _empty(name)
    first = items[0]
    kind = _element_kind(first)
    if kind is None and not isinstance(first, numbers.Number | np.generic | list | tuple):
        raise TypeError(
            f"{name}[0] is a {_type_name(first)}; {name} must be {_ACCEPTED}. Elements must "
            "be file paths (str or os.PathLike), PIL images or numpy arrays."
        )
    for i, item in enumerate(items):
        if _element_kind(item) != kind:
            raise TypeError(
                f"{name} mixes element types: {name}[{i}] is a {_type_name(item)} but "
                f"{name}[0] is a {_type_name(first)}. All elements must be file paths "
                "(str or os.PathLike), all PIL images or all numpy arrays, not a mix."
            )
    if kind is None:  # numbers or nested lists: an array in list form
        try:
            arr = np.asarray(items)
        except ValueError as exc:
            raise ValueError(
                f"{name} is a nested list that does not form a regular array ({exc}); pass "
                "a numpy array or a list of per-image numpy arrays."
            ) from exc
        if arr.dtype.kind not in "biufc":
            raise TypeError(
                f"{name} is a nested list of dtype {arr.dtype}; expected numbers. {name} "
                f"must be {_ACCEPTED}."
            )
        return _check_array(arr, name)
    if kind == "paths":
        return _check_paths(items, name)
    if kind == "pil":
        for i, im in enumerate(items):
            _check_image_size(im.height, im.width, f"{name}[{i}]")
        return ImageSource("pil", list(items), name=name)
    data = [_check_one_image(img, f"{name}[{i}]") for i, img in enumerate(items)]
    return ImageSource("list", data, name=name)


def _check_array(arr, name):
    kind = arr.dtype.kind
    if kind == "O" and arr.ndim == 2 and arr.shape[1] > 1:
        # an object table of numbers (e.g. from pandas) is feature vectors
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name} is a 2-D object array that is not numeric: {exc}") from exc
        return _check_features(arr, name)
    if kind in "UO":
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise TypeError(
                f"{name} is a {arr.ndim}-D array of dtype {arr.dtype} with shape {arr.shape}; "
                "file paths must be a 1-D array or list, and images must be numeric arrays "
                f"({_ACCEPTED})."
            )
        if kind == "U":
            if arr.size == 0:
                raise _empty(name)
            return _check_paths(arr.tolist(), name)
        return _check_sequence(list(arr), name)
    _check_pixel_dtype(arr, name)
    if arr.ndim == 2:
        return _check_features(arr, name)
    if arr.ndim not in (3, 4):
        raise ValueError(
            f"{name} has shape {arr.shape} ({arr.ndim}-D); expected {_ACCEPTED}. Reshape your "
            f"data: wrap a single image as {name}[None], a single feature vector as "
            f"{name}.reshape(1, -1)."
        )
    if arr.shape[0] == 0:
        raise _empty(name)
    out = _channels_last(arr, name, axis=1) if arr.ndim == 4 else arr
    _check_image_size(out.shape[1], out.shape[2], name)
    _check_pixel_values(arr, name)
    return ImageSource("array", out, name=name)


def check_images(X, *, name="X"):
    """Validate image input and return an :class:`ImageSource`.

    Every check (types, shapes, channel layout, pixel range, NaN, file existence) runs
    here, before any decoding or model work; images are decoded only when accessed. The
    accepted inputs and rules are listed in this module's docstring.

    Parameters
    ----------
    X : array-like, list or ImageSource
        Feature vectors, an image array, a list of file paths, PIL images or per-image
        arrays. An ``ImageSource`` is returned unchanged.
    name : str, default="X"
        Parameter name used in error messages.

    Returns
    -------
    ImageSource

    Raises
    ------
    TypeError
        Unsupported type or dtype, or a list mixing element types.
    ValueError
        Empty input, wrong rank or channel count, NaN or out-of-range pixels, a directory.
    FileNotFoundError
        Image files that do not exist (up to 10 listed).
    """
    if isinstance(X, ImageSource):
        return X
    if X is None:
        raise ValueError(f"{name} is None; pass images, image file paths or features.")
    if isinstance(X, str | os.PathLike):
        raise TypeError(
            f"{name} is a single path {os.fspath(X)!r}; pass a list of image file paths "
            "(folders are not searched)."
        )
    if isinstance(X, Image.Image):
        raise TypeError(f"{name} is a single PIL image; pass a list of images, e.g. [{name}].")
    if sp.issparse(X):
        raise TypeError(
            f"{name} is a sparse matrix; pass dense features ({name}.toarray()) or images."
        )
    if isinstance(X, list | tuple):
        return _check_sequence(list(X), name)
    X = _as_numpy(X)
    if not isinstance(X, np.ndarray) and not hasattr(X, "__array__"):
        raise TypeError(f"{name} must be {_ACCEPTED}; got {_type_name(X)}.")
    return _check_array(np.asarray(X), name)


# --------------------------------------------------------------------------- tensors


def make_transform(data_config):
    """Eval-time preprocessing that follows the backbone's pretrained data config.

    The shorter side is resized to ``H / crop_pct`` with ``interpolation``, the centre
    ``H x W`` is cropped, and the result is scaled to [0, 1] and normalised with ``mean``
    and ``std`` (``timm.data.create_transform(..., is_training=False)``).

    Parameters
    ----------
    data_config : dict
        Keys ``input_size`` ``(3, H, W)``, ``mean``, ``std``, ``interpolation`` and
        ``crop_pct`` (and optionally ``crop_mode``), as returned by
        ``timm.data.resolve_data_config``.

    Returns
    -------
    callable
        RGB PIL image -> float32 tensor of shape ``(3, H, W)``.
    """
    if not isinstance(data_config, Mapping):
        raise TypeError(
            "data_config must be a dict as returned by timm.data.resolve_data_config; got "
            f"{_type_name(data_config)}."
        )
    missing = [k for k in _DATA_CONFIG_KEYS if k not in data_config]
    if missing:
        raise ValueError(
            f"data_config is missing key(s) {missing}; got keys {sorted(data_config)}. Pass "
            "the dict returned by timm.data.resolve_data_config(model=...)."
        )
    input_size = tuple(data_config["input_size"])
    if (
        len(input_size) != 3
        or input_size[0] != 3
        or not all(isinstance(s, numbers.Integral) and s > 0 for s in input_size)
    ):
        raise ValueError(
            "data_config['input_size'] must be (3, H, W) with positive ints (RGB input); got "
            f"{data_config['input_size']!r}."
        )
    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
        raise ValueError(
            "data_config['mean'] and ['std'] must have 3 values each (RGB), std > 0; got "
            f"mean={data_config['mean']!r}, std={data_config['std']!r}."
        )
    interpolation = data_config["interpolation"]
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"data_config['interpolation'] must be one of {_INTERPOLATIONS}; got {interpolation!r}."
        )
    crop_pct = data_config["crop_pct"]
    if crop_pct is not None and not (isinstance(crop_pct, numbers.Real) and crop_pct > 0):
        raise ValueError(f"data_config['crop_pct'] must be a number > 0; got {crop_pct!r}.")

    from timm.data import create_transform

    kwargs = {
        "input_size": input_size,
        "mean": mean,
        "std": std,
        "interpolation": interpolation,
        "crop_pct": crop_pct,
    }
    if data_config.get("crop_mode") is not None:
        kwargs["crop_mode"] = data_config["crop_mode"]
    return create_transform(**kwargs, is_training=False)


class ImageDataset(torch.utils.data.Dataset):
    """Dataset of ``(tensor, target)`` pairs over an :class:`ImageSource`.

    Parameters
    ----------
    source : ImageSource or image input
        Anything else is validated with :func:`check_images` first.
    y : array-like of shape (n,), default=None
        Targets. With ``None`` the second element of every item is ``0`` (skorch needs a
        pair).
    transform : callable, default=None
        RGB PIL image -> tensor, e.g. :func:`make_transform`. With ``None``, images become
        float32 tensors ``(3, H, W)`` in [0, 1], neither resized nor normalised. Ignored
        for kind ``"features"``, whose items are the float32 feature rows.
    """

    def __init__(self, source, y=None, transform=None):
        source = check_images(source)
        if y is not None:
            if not isinstance(y, torch.Tensor):
                y = np.asarray(y)
            if y.ndim == 0 or len(y) != len(source):
                n_y = "a scalar" if y.ndim == 0 else f"{len(y)} labels"
                raise ValueError(
                    f"y has {n_y} but {source.name} has {len(source)} images; they must match."
                )
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None; got {transform!r}.")
        self.source = source
        self.y = y
        self.transform = transform

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        target = 0 if self.y is None else self.y[i]
        if self.source.kind == "features":
            row = self.source.data[self.source._index(i)]
            return torch.from_numpy(np.array(row, dtype=np.float32)), target
        img = self.source[i]
        x = _to_tensor(img) if self.transform is None else self.transform(img)
        return x, target
