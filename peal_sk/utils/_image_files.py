"""Image files on disk: which names are images, and whether a file decodes.

One definition for every part that reads image folders (``peal-sk embed``, ``peal-sk
project``, ``peal-sk simulate``), without importing torch.
"""

# SPDX-License-Identifier: BSD-3-Clause

import os

__all__ = ["IMAGE_EXTENSIONS", "is_image_name", "unreadable_reason"]

#: file name endings read as images when a folder is searched (compared in lower case);
#: every one is a format Pillow decodes
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
)


def is_image_name(name):
    """Whether the file name ``name`` ends in one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.fspath(name).lower().endswith(IMAGE_EXTENSIONS)


def unreadable_reason(path):
    """None when Pillow decodes the whole file to RGB, else the error as a short text.

    The whole file is decoded, so a truncated JPEG is found like a truncated PNG (Pillow's
    ``verify`` checks PNG checksums but reads no JPEG data). A JPEG is decoded at a
    reduced scale (``draft``), which still reads all of its compressed data.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))
            im.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - any decoder failure means unreadable
        return f"{type(exc).__name__}: {exc}"
    return None
