"""What a comparison must never let out: secrets, files outside ``--out``, and environment
failures dressed up as results.

* :func:`redact` hides passwords in any text: URL userinfo (``scheme://user:SECRET@host``) and
  ``key=value`` pairs with a secret-looking key, as in a libpq query (``?password=SECRET``) or
  keyword string (``password=SECRET host=db``). :func:`scrub` also removes the literal secrets of
  a known URL (raw and percent-decoded) wherever they appear, e.g. in a driver's error message,
  and applies to every string of a document.
* :func:`safe_name` turns a task or method name into a file name that stays in its folder; two
  different names never get the same file name. :func:`inside` checks a path is under a folder.
* :func:`is_environment_error` tells a failure of the machine (disk full, permission denied, I/O
  error, a killed worker) from a failure of the trial itself: the first must be retried on resume,
  not stored as the trial's result.
"""

from __future__ import annotations

import errno
import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

__all__ = [
    "ENVIRONMENT_ERRNOS",
    "inside",
    "is_environment_error",
    "redact",
    "safe_name",
    "scrub",
    "secrets_of",
]

_SECRET_KEYS = r"password|passwd|pwd|sslpassword|secret|token|api_?key|access_token"
_KEY_VALUE = re.compile(
    rf"(?i)(?<![A-Za-z0-9_])({_SECRET_KEYS})(\s*=\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s&;,'\"]+)"
)
# scheme://user:PASSWORD@host — greedy up to the last "@" before the path, as URL parsers do.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*:)([^\s/?#]*)@")
MASK = "***"
_MIN_LITERAL = 4
"""Shorter secrets are hidden where the patterns find them, not replaced everywhere in a text
(replacing every "ab" would garble it)."""


def redact(text: str) -> str:
    """``text`` with every password-like value in it replaced by ``***``."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def secrets_of(url: str | None) -> list[str]:
    """The secret values written in ``url`` (each raw and percent-decoded)."""
    if not url:
        return []
    found: list[str] = []
    for m in _USERINFO.finditer(url):
        found.append(m.group(2))
    for m in _KEY_VALUE.finditer(url):
        found.append(m.group(3).strip("'\""))
    out: list[str] = []
    for value in found:
        for form in (value, unquote(value), unquote(value.replace("+", " "))):
            if form and form != MASK and form not in out:
                out.append(form)
    return sorted(out, key=len, reverse=True)


def scrub(value: Any, secrets: list[str] | tuple[str, ...] = ()) -> Any:
    """``value`` (a string, or a JSON-like structure of them) with secrets removed."""
    if isinstance(value, str):
        text = redact(value)
        for secret in secrets:
            if len(secret) >= _MIN_LITERAL:
                text = text.replace(secret, MASK)
        return text
    if isinstance(value, dict):
        return {scrub(k, secrets): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    return value


_UNSAFE = re.compile(r"[^a-z0-9_-]+")
_MAX_NAME = 60


def safe_name(name: str) -> str:
    """A file name for ``name``: lower-case letters, digits, ``_`` and ``-`` only.

    A name that is already such a file name is kept; any other gets a short hash of the original
    appended, so ``"a/b"``, ``"a_b"``, ``"A_b"`` and ``".."`` all map to different names, none of
    which can leave the folder it is written in (or clash on a case-insensitive file system).
    """
    text = str(name)
    slug = _UNSAFE.sub("_", text.lower()).strip("_")[:_MAX_NAME]
    if slug == text and slug:
        return slug
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slug or 'name'}-{digest}"


def inside(root: Path, path: Path) -> Path:
    """``path`` if it resolves to a place under ``root``; ``ValueError`` otherwise."""
    resolved = Path(path).resolve()
    base = Path(root).resolve()
    if resolved != base and base not in resolved.parents:
        raise ValueError(f"refusing to write {path}: it is outside the output folder {root}")
    return Path(path)


ENVIRONMENT_ERRNOS = frozenset(
    code
    for code in (
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.EIO,
        errno.ENOMEM,
        errno.EMFILE,
        errno.ENFILE,
    )
    if code is not None
)
"""``OSError`` numbers that are the machine's fault, not the trial's."""

_DATABASE_FULL = re.compile(
    r"(?i)database or disk is full|disk I/O error|attempt to write a readonly database|"
    r"unable to open database file|No space left on device"
)
_KILLED = re.compile(r"(?i)\b(worker|process)\b.*\b(killed|terminated|exited unexpectedly)\b")


def is_environment_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a failure of the machine:
    ``OSError`` with an errno of :data:`ENVIRONMENT_ERRNOS`, ``MemoryError``, or a killed worker
    process (``DataLoader worker (pid 12) is killed by signal``, a broken process pool)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in ENVIRONMENT_ERRNOS:
            return True
        if isinstance(current, MemoryError):
            return True
        text = str(current)
        if type(current).__name__ == "BrokenProcessPool" or _KILLED.search(text):
            return True
        if _DATABASE_FULL.search(text):
            return True
        current = current.__cause__ or current.__context__
    return False
