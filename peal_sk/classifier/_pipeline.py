"""The inference input pipeline: batched preprocessing that overlaps with the forward pass.

:class:`Preprocessor` applies the eval transform of :func:`make_transform` (resize the
shorter side, centre crop, scale to [0, 1], normalise) to whole batches:

* image **arrays** (kind ``"array"``) are resized in numpy, a batch at a time, with
  Pillow's own resampling arithmetic (its filter, fixed-point coefficients and rounding of
  each pass), so the tensors are bit-identical to the per-image Pillow path, about ten
  times faster;
* files, PIL images and lists of arrays are decoded, resized and cropped by Pillow, one
  image per task in a thread pool (Pillow releases the GIL), and normalised per batch.

:func:`iter_batches` prepares the next batches in background threads while the caller
runs the model on the current one, so the forward pass never waits for decoding.
"""

# SPDX-License-Identifier: BSD-3-Clause

import collections
import functools
import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ._images import make_transform

__all__ = ["Preprocessor", "iter_batches"]

#: threads that prepare batches; more than a few only fight the forward pass for cores
N_WORKERS = max(1, min(4, os.cpu_count() or 1))

#: Pillow's fixed-point precision for 8-bit images (Resample.c: 32 - 8 - 2)
_PRECISION_BITS = 22


def _bicubic(x):
    """Pillow's bicubic kernel (a = -0.5), support 2."""
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _bilinear(x):
    """Pillow's triangle kernel, support 1."""
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


_FILTERS = {"bicubic": (_bicubic, 2.0), "bilinear": (_bilinear, 1.0)}


@functools.lru_cache(maxsize=64)
def _coefficients(in_size, out_size, start, stop, interpolation):
    """Source indices and integer weights of output pixels ``start:stop`` (Pillow's).

    Follows ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` of Pillow's Resample.c
    for the box ``(0, in_size)``: the same double-precision arithmetic in the same order,
    then the same rounding to 22-bit fixed point. Returns ``(index, weight)``, both of
    shape ``(stop - start, taps)``; padding taps have weight 0.
    """
    filt, support = _FILTERS[interpolation]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support * filterscale
    ss = 1.0 / filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    index = np.zeros((stop - start, ksize), dtype=np.intp)
    weight = np.zeros((stop - start, ksize), dtype=np.int64)
    one = 1 << _PRECISION_BITS
    for row, xx in enumerate(range(start, stop)):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [filt((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in k:
            ww += w
        if ww != 0.0:
            k = [w / ww for w in k]
        index[row, :xmax] = np.arange(xmin, xmin + xmax)
        index[row, xmax:] = xmin
        weight[row, :xmax] = [int(-0.5 + w * one) if w < 0 else int(0.5 + w * one) for w in k]
    return index, weight


def _resample(images, axis, in_size, out_size, start, stop, interpolation):
    """One Pillow pass along ``axis`` of uint8 ``images``, keeping outputs ``start:stop``.

    32-bit integer accumulation with rounding and clipping to 8 bits, as Pillow does.
    """
    index, weight = _coefficients(in_size, out_size, start, stop, interpolation)
    weight = weight.astype(np.int32)
    acc = np.full(
        images.shape[:axis] + (stop - start,) + images.shape[axis + 1 :],
        1 << (_PRECISION_BITS - 1),
        dtype=np.int32,
    )
    shape = [1] * images.ndim
    shape[axis] = stop - start
    for t in range(index.shape[1]):
        acc += np.take(images, index[:, t], axis=axis) * weight[:, t].reshape(shape)
    acc >>= _PRECISION_BITS
    np.clip(acc, 0, 255, out=acc)
    return acc.astype(np.uint8)


def _rgb_uint8(batch):
    """A validated image array batch as uint8 RGB ``(n, H, W, 3)``, as ``_to_pil`` does."""
    if batch.ndim == 4:
        batch = batch[..., 0] if batch.shape[-1] == 1 else batch[..., :3]
    if batch.dtype != np.uint8:
        if batch.dtype.kind == "f":
            batch = np.rint(batch.astype(np.float64) * 255.0)
        batch = np.clip(batch, 0, 255).astype(np.uint8)
    if batch.ndim == 3:
        batch = np.repeat(batch[..., None], 3, axis=3)
    return batch


class Preprocessor:
    """The eval transform of a data config, for batches.

    Parameters
    ----------
    data_config : dict
        As for :func:`~peal_sk.classifier._images.make_transform`.
    channels_last : bool, default=True
        The memory layout of the batches: channels-last (a strided view of
        ``(n, h, w, 3)``, what torch's convolutions run fastest on) or contiguous NCHW
        (what ONNX Runtime takes without a copy). Same values either way.

    Attributes
    ----------
    transform : callable
        The per-image transform (PIL image -> tensor), the reference.
    batched : bool
        Whether the transform is the standard resize / centre-crop / normalise chain that
        the batched paths reproduce; otherwise every image goes through ``transform``.
    """

    def __init__(self, data_config, *, channels_last=True):
        from torchvision import transforms as T

        self.channels_last = bool(channels_last)
        self.transform = make_transform(data_config)
        steps = list(getattr(self.transform, "transforms", []))
        self.batched = False
        if len(steps) != 4:
            return
        resize, crop, to_tensor, normalize = steps
        size = resize.size if isinstance(resize, T.Resize) else None
        if isinstance(size, list | tuple) and len(size) == 1:
            size = size[0]
        modes = {T.InterpolationMode.BICUBIC: "bicubic", T.InterpolationMode.BILINEAR: "bilinear"}
        if (
            not isinstance(size, int)
            or resize.max_size is not None
            or resize.interpolation not in modes
            or not isinstance(crop, T.CenterCrop)
            or type(to_tensor).__name__ not in ("MaybeToTensor", "ToTensor")
            or not isinstance(normalize, T.Normalize)
            or normalize.inplace
        ):
            return
        self.batched = True
        self._short = size
        self._interpolation = modes[resize.interpolation]
        self._crop = tuple(int(s) for s in crop.size)  # (height, width)
        self._resize_crop = T.Compose([resize, crop])
        # every uint8 value of every channel through ToTensor and Normalize's operations
        mean = torch.as_tensor(normalize.mean, dtype=torch.float32).view(-1, 1)
        std = torch.as_tensor(normalize.std, dtype=torch.float32).view(-1, 1)
        levels = torch.arange(256, dtype=torch.uint8).to(torch.float32).div(255).view(1, -1)
        self._table = levels.sub(mean).div(std).numpy()  # (3, 256) float32

    def _geometry(self, height, width):
        """torchvision's resized size and crop offsets, or None when the crop pads."""
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self._short, int(self._short * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        crop_h, crop_w = self._crop
        if crop_h > new_h or crop_w > new_w:
            return None
        top = int(round((new_h - crop_h) / 2.0))
        left = int(round((new_w - crop_w) / 2.0))
        return new_h, new_w, top, left

    def array_batch(self, batch):
        """Tensors of an image array batch ``(n, H, W[, C])``, or None when not batched.

        Bit-identical to ``transform`` applied to each image (as a PIL image), in the
        memory layout of ``channels_last``.
        """
        if not self.batched:
            return None
        rgb = _rgb_uint8(np.asarray(batch))
        n, height, width, _ = rgb.shape
        geometry = self._geometry(height, width)
        if geometry is None:
            return None
        new_h, new_w, top, left = geometry
        crop_h, crop_w = self._crop
        # only the pixels that survive the crop are computed (each is independent)
        if new_w != width:
            rgb = _resample(rgb, 2, width, new_w, left, left + crop_w, self._interpolation)
        else:
            rgb = rgb[:, :, left : left + crop_w]
        if new_h != height:
            rgb = _resample(rgb, 1, height, new_h, top, top + crop_h, self._interpolation)
        else:
            rgb = rgb[:, top : top + crop_h]
        return self.normalize(rgb)

    def pil_pixels(self, image):
        """Resized and cropped uint8 pixels ``(h, w, 3)`` of an RGB PIL image (Pillow)."""
        return np.asarray(self._resize_crop(image))

    def normalize(self, pixels):
        """uint8 ``(n, h, w, 3)`` -> normalised float32 ``(n, 3, h, w)``.

        A table lookup of the values ``ToTensor`` and ``Normalize`` compute (the same
        float32 operations), so identical to them. Channels-last memory, or contiguous
        NCHW planes (one lookup per channel, several times faster than the interleaved
        one, and no copy later for an engine that wants NCHW) with ``channels_last=False``.
        """
        if self.channels_last:
            out = self._table[np.arange(3), pixels]  # (n, h, w, 3) float32
            return torch.from_numpy(out).permute(0, 3, 1, 2)
        n, h, w, _ = pixels.shape
        out = np.empty((n, 3, h, w), dtype=np.float32)
        for c in range(3):  # mode="clip": no bounds check (uint8 < 256), no buffering
            np.take(self._table[c], pixels[..., c], out=out[:, c], mode="clip")
        return torch.from_numpy(out)


def _one_image(source, pre, i):
    image = source[i]
    if pre.batched:
        return pre.pil_pixels(image)
    return pre.transform(image)


def _array_batch(source, pre, start, stop):
    out = pre.array_batch(source.data[start:stop])
    if out is None:  # a crop larger than the resized image: the reference path
        return torch.stack([pre.transform(source[i]) for i in range(start, stop)])
    return out


def _features_batch(source, start, stop):
    return torch.from_numpy(np.array(source.data[start:stop], dtype=np.float32))


def iter_batches(source, pre, batch_size, *, n_workers=None, progress=False):
    """Model inputs for ``source`` in order, prepared ahead in background threads.

    Parameters
    ----------
    source : ImageSource
        Validated input (:func:`check_images`).
    pre : Preprocessor or None
        The preprocessing; ignored for kind ``"features"``.
    batch_size : int
    n_workers : int or None, default=None
        Preparing threads (``N_WORKERS`` when None). Up to ``n_workers + 1`` batches are
        in flight.
    progress : bool, default=False
        Show a tqdm progress bar over batches.

    Yields
    ------
    batch : torch.Tensor
        Float32 ``(n, 3, h, w)`` images (channels-last memory for image arrays), or
        ``(n, n_features)`` feature rows.
    """
    n = len(source)
    starts = list(range(0, n, batch_size))
    n_workers = N_WORKERS if n_workers is None else max(1, int(n_workers))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(starts), desc="embedding", unit="batch")
    executor = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="peal_sk-pre")
    pending = collections.deque()

    def submit(start):
        stop = min(start + batch_size, n)
        if source.kind == "features":
            pending.append(("batch", executor.submit(_features_batch, source, start, stop)))
        elif source.kind == "array":
            pending.append(("batch", executor.submit(_array_batch, source, pre, start, stop)))
        else:  # decoding dominates: one task per image
            futures = [executor.submit(_one_image, source, pre, i) for i in range(start, stop)]
            pending.append(("images", futures))

    def collect(kind, job):
        if kind == "batch":
            return job.result()
        parts = [f.result() for f in job]
        if isinstance(parts[0], torch.Tensor):
            return torch.stack(parts)
        return pre.normalize(np.stack(parts))  # centre crops: all of the same size

    try:
        ahead = iter(starts)
        for start in itertools.islice(ahead, n_workers + 1):
            submit(start)
        while pending:
            kind, job = pending.popleft()
            batch = collect(kind, job)
            following = next(ahead, None)
            if following is not None:
                submit(following)
            if bar is not None:
                bar.update(1)
            yield batch
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
