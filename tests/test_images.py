"""Image input: every accepted layout gives the same tensors; bad input fails up front."""

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
PIL_Image = pytest.importorskip("PIL.Image")
pytest.importorskip("timm")

from peal_sk.classifier._images import (  # noqa: E402
    ImageDataset,
    ImageSource,
    check_images,
    make_transform,
)

CONFIG = {
    "input_size": (3, 16, 16),
    "mean": (0.5,) * 3,
    "std": (0.5,) * 3,
    "interpolation": "bicubic",
    "crop_pct": 1.0,
}


@pytest.fixture(scope="module")
def transform():
    return make_transform(CONFIG)


@pytest.fixture
def nhwc():
    return np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)


def tensors(X, transform, **kwargs):
    ds = ImageDataset(check_images(X, **kwargs), transform=transform)
    return torch.stack([ds[i][0] for i in range(len(ds))])


def write_pngs(arrays, folder):
    paths = []
    for i, a in enumerate(arrays):
        path = folder / f"img_{i}.png"
        PIL_Image.fromarray(a).save(path)
        paths.append(path)
    return paths


# ------------------------------------------------------------------ accepted layouts


def test_layouts_give_identical_tensors(nhwc, transform, tmp_path):
    expected = (torch.from_numpy(nhwc).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    paths = write_pngs(nhwc, tmp_path)
    variants = {
        "nhwc": nhwc,
        "nchw": np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)),
        "float64": nhwc / 255.0,
        "float32": (nhwc / 255.0).astype(np.float32),
        "nchw_float": nhwc.transpose(0, 3, 1, 2) / 255.0,
        "int64": nhwc.astype(np.int64),
        "torch": torch.from_numpy(nhwc),
        "list": list(nhwc),
        "list_chw": [a.transpose(2, 0, 1) for a in nhwc],
        "pil": [PIL_Image.fromarray(a) for a in nhwc],
        "paths": paths,
        "str_paths": [str(p) for p in paths],
        "path_array": np.array([str(p) for p in paths]),
        "tuple": tuple(nhwc),
    }
    kinds = {"nhwc": "array", "list": "list", "pil": "pil", "paths": "paths"}
    for key, X in variants.items():
        out = tensors(X, transform)
        assert out.dtype == torch.float32 and out.shape == (4, 3, 16, 16), key
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6, msg=key)
        if key in kinds:
            assert check_images(X).kind == kinds[key]


def test_source_items_are_rgb_pil(nhwc):
    source = check_images(nhwc.transpose(0, 3, 1, 2))
    img = source[-1]
    assert isinstance(img, PIL_Image.Image) and img.mode == "RGB" and img.size == (16, 16)
    np.testing.assert_array_equal(np.asarray(img), nhwc[-1])
    assert len(source) == 4 and source.data.shape == (4, 16, 16, 3)
    with pytest.raises(IndexError, match="out of range"):
        source[4]


@pytest.mark.parametrize(
    "make", [lambda g: g, lambda g: g[..., None], lambda g: g[:, None]], ids=["NHW", "NHW1", "N1HW"]
)
def test_grayscale_becomes_three_equal_channels(make, transform):
    gray = np.random.default_rng(1).integers(0, 256, size=(3, 16, 16), dtype=np.uint8)
    out = tensors(make(gray), transform)
    assert out.shape == (3, 3, 16, 16)
    torch.testing.assert_close(out[:, 0], out[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 0], out[:, 2], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 0], (torch.from_numpy(gray).float() / 255 - 0.5) / 0.5)


def test_rgba_drops_alpha(nhwc, transform):
    alpha = np.random.default_rng(2).integers(0, 256, size=(4, 16, 16, 1), dtype=np.uint8)
    rgba = np.concatenate([nhwc, alpha], axis=-1)
    expected = tensors(nhwc, transform)
    torch.testing.assert_close(tensors(rgba, transform), expected, rtol=0, atol=0)
    torch.testing.assert_close(tensors(rgba.transpose(0, 3, 1, 2), transform), expected)
    pil_rgba = [PIL_Image.fromarray(a) for a in rgba]
    assert pil_rgba[0].mode == "RGBA"
    torch.testing.assert_close(tensors(pil_rgba, transform), expected, rtol=0, atol=0)


def test_ambiguous_layout_is_channels_last():
    X = np.zeros((2, 3, 4, 3), dtype=np.uint8)
    source = check_images(X)
    assert source.data.shape == (2, 3, 4, 3)
    assert source[0].size == (4, 3)  # PIL size is (W, H)
    one = check_images([np.zeros((3, 5, 3), dtype=np.uint8)])
    assert one[0].size == (5, 3)


def test_mixed_size_list(transform):
    rng = np.random.default_rng(3)
    images = [
        rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8),
        rng.random((20, 16)),  # gray float
        rng.integers(0, 256, size=(3, 8, 9), dtype=np.uint8),  # channels-first
        rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8),  # RGBA
    ]
    source = check_images(images)
    assert source.kind == "list"
    assert [source[i].size for i in range(4)] == [(12, 10), (16, 20), (9, 8), (5, 7)]
    out = tensors(images, transform)
    assert out.shape == (4, 3, 16, 16)
    assert torch.isfinite(out).all()


def test_pil_list_converts_modes(transform):
    rgb = PIL_Image.new("RGB", (20, 30), (255, 0, 0))
    gray = PIL_Image.new("L", (16, 16), 128)
    rgba = PIL_Image.new("RGBA", (16, 16), (0, 0, 255, 10))
    source = check_images([rgb, gray, rgba])
    assert source.kind == "pil"
    assert all(source[i].mode == "RGB" for i in range(3))
    assert source[1].getpixel((0, 0)) == (128, 128, 128)
    assert source[2].getpixel((0, 0)) == (0, 0, 255)
    out = tensors([rgb, gray, rgba], transform)
    assert out.shape == (3, 3, 16, 16)
    torch.testing.assert_close(out[0, 0], torch.ones(16, 16))
    torch.testing.assert_close(out[0, 1], -torch.ones(16, 16))


def test_make_transform_resizes_and_crops():
    config = dict(CONFIG, input_size=(3, 8, 8), crop_pct=0.5, interpolation="bilinear")
    t = make_transform(config)
    img = PIL_Image.new("RGB", (30, 20), (255, 255, 255))
    out = t(img)
    assert out.shape == (3, 8, 8) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.ones(3, 8, 8))
    t = make_transform(dict(config, crop_mode="squash"))
    assert t(img).shape == (3, 8, 8)


def test_features_kind():
    X = np.random.default_rng(4).normal(size=(5, 7))
    source = check_images(X)
    assert source.kind == "features" and len(source) == 5
    ds = ImageDataset(source, y=np.arange(5) * 10, transform=lambda img: 1 / 0)
    x, y = ds[2]
    assert x.dtype == torch.float32 and x.shape == (7,)
    torch.testing.assert_close(x, torch.from_numpy(X[2]).float())
    assert y == 20
    assert ImageDataset(X)[4][1] == 0
    assert check_images(X.astype(np.int32)).kind == "features"
    with pytest.raises(TypeError, match="feature vectors"):
        source[0]


def test_dataset_targets_and_default_transform(nhwc):
    ds = ImageDataset(nhwc, y=["a", "b", "c", "d"])
    x, y = ds[1]
    assert y == "b" and x.shape == (3, 16, 16)
    torch.testing.assert_close(x, torch.from_numpy(nhwc[1]).permute(2, 0, 1).float() / 255)
    assert ImageDataset(nhwc)[0][1] == 0
    with pytest.raises(ValueError, match="y has 3 labels but X has 4 images"):
        ImageDataset(nhwc, y=[0, 1, 2])
    with pytest.raises(TypeError, match="transform must be callable"):
        ImageDataset(nhwc, transform="resize")


def test_subset(nhwc, tmp_path):
    paths = write_pngs(nhwc, tmp_path)
    for X in (nhwc, list(nhwc), [PIL_Image.fromarray(a) for a in nhwc], paths):
        source = check_images(X)
        sub = source.subset([3, 0, -1])
        assert sub.kind == source.kind and len(sub) == 3
        for j, i in enumerate([3, 0, 3]):
            np.testing.assert_array_equal(np.asarray(sub[j]), nhwc[i])
        mask = source.subset(np.array([True, False, True, False]))
        np.testing.assert_array_equal(np.asarray(mask[1]), nhwc[2])
        assert len(source.subset([])) == 0
    feats = check_images(np.arange(12.0).reshape(4, 3)).subset(np.array([2]))
    assert feats.kind == "features"
    np.testing.assert_array_equal(feats.data, [[6.0, 7.0, 8.0]])
    source = check_images(nhwc)
    with pytest.raises(IndexError, match="out of range for X with 4 images"):
        source.subset([0, 4])
    with pytest.raises(TypeError, match="integers or a boolean mask"):
        source.subset([0.5])
    with pytest.raises(ValueError, match="boolean mask"):
        source.subset([True, False])


def test_image_source_passthrough(nhwc):
    source = check_images(nhwc)
    assert check_images(source) is source
    assert isinstance(source, ImageSource) and "array" in repr(source)


# ------------------------------------------------------------------ files


def test_missing_files_are_listed(tmp_path):
    existing = write_pngs([np.zeros((4, 4, 3), np.uint8)], tmp_path)
    missing = [tmp_path / f"gone_{i}.png" for i in range(12)]
    with pytest.raises(FileNotFoundError) as info:
        check_images(existing + missing)
    msg = str(info.value)
    assert "12 of 13 image files do not exist" in msg
    for p in missing[:10]:
        assert str(p) in msg
    assert str(missing[10]) not in msg and "and 2 more" in msg
    with pytest.raises(FileNotFoundError, match=re.escape("'nope.png'")):
        check_images(["nope.png"])


def test_corrupt_file_errors_on_access(tmp_path, transform):
    good = write_pngs([np.zeros((4, 4, 3), np.uint8)], tmp_path)[0]
    bad = tmp_path / "x.png"
    bad.write_bytes(b"this is not a png at all" * 10)
    source = check_images([good, bad])  # exists: passes the up-front check
    assert source[0].size == (4, 4)
    with pytest.raises(ValueError, match=r"X\[1\]: cannot decode image file .*x\.png.*Error"):
        source[1]
    with pytest.raises(ValueError, match=r"x\.png"):
        ImageDataset(source, transform=transform)[1]


def test_directory_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        check_images([tmp_path])


# ------------------------------------------------------------------ bad input


def test_float_out_of_range():
    with pytest.raises(ValueError, match=r"float X must hold pixel values in \[0, 1\].*255"):
        check_images(np.full((2, 8, 8, 3), 2.0))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        check_images(np.linspace(-1, 1, 2 * 8 * 8 * 3).reshape(2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"X\[1\].*\[0, 1\]"):
        check_images([np.zeros((8, 8)), np.full((8, 8), 1.5)])


def test_integer_out_of_range():
    with pytest.raises(ValueError, match="0-255.*65535"):
        check_images(np.full((2, 8, 8), 1000, dtype=np.uint16))
    with pytest.raises(ValueError, match="0-255"):
        check_images(np.full((2, 8, 8), -1, dtype=np.int8))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf(bad):
    X = np.zeros((2, 8, 8, 3))
    X[1, 2, 3, 0] = bad
    with pytest.raises(ValueError, match=r"X_pool contains NaN or infinite.*\(1, 2, 3, 0\)"):
        check_images(X, name="X_pool")
    F = np.zeros((3, 4))
    F[2, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite values .*row 2, column 1"):
        check_images(F)
    with pytest.raises(ValueError, match=r"X\[0\] contains NaN"):
        check_images([X[1]])


@pytest.mark.parametrize("shape", [(5,), (2, 3, 8, 8, 3), (1, 1, 2, 3, 8, 8)])
def test_wrong_rank(shape):
    with pytest.raises(ValueError, match=re.escape(f"X has shape {shape}")):
        check_images(np.zeros(shape, dtype=np.uint8))
    with pytest.raises(ValueError, match="each image must be H x W"):
        check_images([np.zeros((2, 3, 8, 8), dtype=np.uint8)])


@pytest.mark.parametrize("shape", [(2, 8, 8, 5), (2, 2, 8, 8), (2, 5, 6, 7)])
def test_wrong_channels(shape):
    msg = re.escape(f"X has shape {shape}") + r".*channels-last \(n, H, W, C\)"
    with pytest.raises(ValueError, match=msg):
        check_images(np.zeros(shape, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"X\[0\] has shape \(5, 6, 7\).*\(1, 3, 4\)"):
        check_images([np.zeros((5, 6, 7), dtype=np.uint8)])


def test_mixed_list_types(nhwc, tmp_path):
    path = write_pngs(nhwc[:1], tmp_path)[0]
    with pytest.raises(TypeError, match=r"X\[1\] is a str but X\[0\] is a ndarray"):
        check_images([nhwc[0], "a.png"])
    with pytest.raises(TypeError, match=r"X\[2\] is a ndarray but X\[0\] is a PosixPath"):
        check_images([path, path, nhwc[0]])
    with pytest.raises(TypeError, match=r"X\[1\] is a int but X\[0\] is a Image"):
        check_images([PIL_Image.fromarray(nhwc[0]), 3])
    with pytest.raises(TypeError, match=r"X\[0\] is a dict"):
        check_images([{"a": 1}])


@pytest.mark.parametrize(
    "X",
    [[], (), np.empty((0, 8, 8, 3)), np.empty((0, 8, 8)), np.empty((0, 5)), np.array([], str)],
    ids=["list", "tuple", "nhwc", "nhw", "features", "paths"],
)
def test_empty(X):
    with pytest.raises(ValueError, match="X is empty"):
        check_images(X)


def test_bad_types_and_dtypes(nhwc, tmp_path):
    with pytest.raises(TypeError, match="boolean dtype"):
        check_images(np.zeros((2, 8, 8), dtype=bool))
    with pytest.raises(ValueError, match="Complex data not supported"):
        check_images(np.zeros((2, 8, 8), dtype=complex))
    with pytest.raises(ValueError, match="2-D object array that is not numeric"):
        check_images(np.array([[1, "a"], [2, "b"]], dtype=object))
    # an object table of numbers (as pandas gives) is feature vectors
    source = check_images(np.array([[1, 2.5], [3, 4]], dtype=object))
    assert source.kind == "features" and source.data.dtype == np.float64
    with pytest.raises(TypeError, match="single path"):
        check_images(str(tmp_path))
    with pytest.raises(TypeError, match="single PIL image"):
        check_images(PIL_Image.fromarray(nhwc[0]))
    with pytest.raises(TypeError, match="got int"):
        check_images(3)
    with pytest.raises(ValueError, match="X is None"):
        check_images(None)
    with pytest.raises(ValueError, match="size 0 x 8"):
        check_images(np.zeros((2, 0, 8, 3), dtype=np.uint8))


def test_nested_lists_are_arrays():
    assert check_images([[0.1, 0.2], [0.3, 0.4]]).kind == "features"
    assert check_images([[[0, 255], [1, 2]]]).kind == "array"
    with pytest.raises(TypeError, match=r"X\[1\] is a str but X\[0\] is a float"):
        check_images([0.5, "a.png"])


def test_make_transform_errors():
    with pytest.raises(ValueError, match=r"missing key\(s\) \['crop_pct'\]"):
        make_transform({k: v for k, v in CONFIG.items() if k != "crop_pct"})
    with pytest.raises(ValueError, match="input_size.*\\(1, 16, 16\\)"):
        make_transform(dict(CONFIG, input_size=(1, 16, 16)))
    with pytest.raises(ValueError, match="interpolation.*'cubic'"):
        make_transform(dict(CONFIG, interpolation="cubic"))
    with pytest.raises(ValueError, match="crop_pct.*0"):
        make_transform(dict(CONFIG, crop_pct=0))
    with pytest.raises(TypeError, match="data_config must be a dict"):
        make_transform([("input_size", (3, 16, 16))])
