"""Build and load optimist's C++ extensions: cached by content, announced, never waiting silently.

:func:`load_extension` is what :mod:`optimist.optim.fused` (and any later C++ engine) uses:

* **Cache key.** The library's name is ``<prefix>_<hash>``, the hash covering everything that
  changes the build: the bytes and file names of every source, headers included (a header is
  passed in ``sources`` like a ``.cpp`` file: hashed and copied, but not compiled on its own),
  the compiler flags, the ``CXX`` compiler, the torch and Python versions and the CPU's
  feature flags (``-march=native``), but not where
  the sources live: they are copied into the build directory under fixed names and compiled
  there, so two checkouts with identical sources share one build in ``TORCH_EXTENSIONS_DIR``.
* **Loading.** An already-built library (marked complete by a ``<name>.built`` file written after
  a successful build) is imported directly, without torch's build machinery or any lock.
* **Building.** A build is always announced on stderr. Builders take an exclusive ``flock`` on
  ``<build dir>/optimist.lock`` (released by the kernel when a process dies, so a killed build
  leaves nothing stale behind) and write their pid and host into ``optimist.lock.owner`` beside
  it. While holding it, any ``lock`` file of torch's own build lock is by construction left over
  from a killed process and is removed, with a message. A process that finds the lock held says
  so on stderr and waits at most ``OPTIMIST_BUILD_WAIT`` seconds (default 600), then raises
  ``RuntimeError`` naming the lock file (the optimizers then warn and use their per-tensor path).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import platform
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import torch

try:  # POSIX; without it (Windows) builds rely on torch's own lock alone
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms CI runs
    fcntl = None  # type: ignore[assignment]

__all__ = ["build_directory", "extension_name", "load_extension"]

DEFAULT_WAIT_S = 600.0
_LIB_SUFFIX = ".pyd" if sys.platform == "win32" else ".so"
_HEADER_SUFFIXES = (".h", ".hpp")


def _announce(message: str) -> None:
    print(f"optimist: {message}", file=sys.stderr, flush=True)


def _cpu_signature() -> str:
    """What ``-march=native`` depends on, so a shared cache never serves another CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def extension_name(
    name_prefix: str, sources: Sequence[Path], cflags: Sequence[str], ldflags: Sequence[str]
) -> str:
    """``<name_prefix>_<hash>`` of everything that changes the build (not the sources' paths)."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    parts = [*cflags, "|", *ldflags, "|", os.environ.get("CXX", "c++"), torch.__version__]
    for part in (*parts, sys.version, _cpu_signature()):
        digest.update(b"\0" + part.encode())
    return f"{name_prefix}_{digest.hexdigest()[:12]}"


def build_directory(name: str) -> Path:
    """Where torch would build extension ``name``: ``$TORCH_EXTENSIONS_DIR/<name>``."""
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    return Path(root) / name


def _import_library(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_extension(
    name_prefix: str,
    sources: Sequence[Path],
    cflags: Sequence[str],
    ldflags: Sequence[str],
    *,
    description: str = "C++ kernels",
) -> ModuleType:
    """Import the compiled extension, building it first if needed (see the module docstring).

    Raises RuntimeError with the reason: missing source, no compiler, no ninja, a compile
    error (with the path of the build log), or a build lock held longer than the bounded wait.
    """
    sources = [Path(s) for s in sources]
    for source in sources:
        if not source.is_file():
            raise RuntimeError(f"optimist: source {source} is missing from the installation")
    name = extension_name(name_prefix, sources, cflags, ldflags)
    build_dir = build_directory(name)
    library, marker = build_dir / f"{name}{_LIB_SUFFIX}", build_dir / f"{name}.built"
    if marker.is_file() and library.is_file():
        try:
            return _import_library(name, library)
        except ImportError as exc:
            _announce(f"the cached {description} could not be loaded ({exc}); rebuilding")
    _check_toolchain(description)
    build_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(build_dir, description):
        if marker.is_file() and library.is_file():  # built by the process we waited for
            return _import_library(name, library)
        _remove_stale_torch_lock(build_dir)
        copies = _copy_sources(sources, build_dir / "src")
        _announce(f"compiling {description} in {build_dir} (first use only, about a minute)...")
        units = [c for c in copies if c.suffix not in _HEADER_SUFFIXES]
        module = _compile(name, units, cflags, ldflags, build_dir, description)
        _write_atomic(marker, f"{datetime.now(timezone.utc).isoformat()}\n")
        return module


def _check_toolchain(description: str) -> None:
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(
            f"optimist: no C++ compiler found (looked for {compiler!r} on PATH; set CXX or "
            f"install g++/clang++) - cannot build the {description}"
        )
    try:
        cpp_extension.verify_ninja_availability()
    except RuntimeError as exc:
        raise RuntimeError(
            f"optimist: the 'ninja' build tool is required to build the {description} "
            "(pip install ninja)"
        ) from exc


def _owner_text() -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"pid {os.getpid()} on {socket.gethostname()} since {now}"


@contextlib.contextmanager
def _build_lock(build_dir: Path, description: str) -> Iterator[None]:
    """Hold ``optimist.lock`` exclusively; wait a bounded time, with a message, if held."""
    lock_path, owner_path = build_dir / "optimist.lock", build_dir / "optimist.lock.owner"
    if fcntl is None:  # pragma: no cover
        yield
        return
    try:
        wait_s = float(os.environ.get("OPTIMIST_BUILD_WAIT", "").strip() or DEFAULT_WAIT_S)
    except ValueError:
        raise RuntimeError(
            "optimist: OPTIMIST_BUILD_WAIT must be a number of seconds, got "
            f"{os.environ['OPTIMIST_BUILD_WAIT']!r}"
        ) from None
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                try:
                    owner = owner_path.read_text(encoding="utf-8").strip() or "another process"
                except OSError:
                    owner = "another process"
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"optimist: gave up after {wait_s:.0f} s waiting for the build lock "
                        f"{lock_path} (held by {owner}) to build the {description}; set "
                        "OPTIMIST_BUILD_WAIT to wait longer"
                    ) from None
                if not announced:
                    _announce(
                        f"waiting up to {wait_s:.0f} s for {owner} to finish building the "
                        f"{description} (lock {lock_path})..."
                    )
                    announced = True
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        _write_atomic(owner_path, _owner_text() + "\n")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                owner_path.unlink()
    finally:
        os.close(fd)  # releases the flock


def _remove_stale_torch_lock(build_dir: Path) -> None:
    """Remove torch's ``lock`` left by a killed build (we hold optimist.lock, so it is stale)."""
    torch_lock = build_dir / "lock"
    if torch_lock.exists():
        _announce(f"removing the stale build lock {torch_lock} left by a killed build")
        with contextlib.suppress(FileNotFoundError):
            torch_lock.unlink()


def _copy_sources(sources: Sequence[Path], directory: Path) -> list[Path]:
    """Copy the sources under fixed names (rewritten only when changed, for ninja's mtimes)."""
    directory.mkdir(parents=True, exist_ok=True)
    copies = []
    for source in sources:
        copy = directory / source.name
        data = source.read_bytes()
        if not copy.is_file() or copy.read_bytes() != data:
            _write_atomic(copy, data)
        copies.append(copy)
    return copies


def _write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def _compile(
    name: str,
    sources: Sequence[Path],
    cflags: Sequence[str],
    ldflags: Sequence[str],
    build_dir: Path,
    description: str,
) -> ModuleType:
    from torch.utils import cpp_extension

    try:
        return cpp_extension.load(
            name=name,
            sources=[str(s) for s in sources],
            extra_cflags=list(cflags),
            extra_ldflags=list(ldflags),
            build_directory=str(build_dir),
            verbose=False,
        )
    except Exception as exc:
        log = build_dir / "optimist_build.log"
        try:
            _write_atomic(log, f"{type(exc).__name__}: {exc}\n")
            where = f"; build log: {log}"
        except OSError:
            where = f"; build directory: {build_dir}"
        raise RuntimeError(
            f"optimist: building the {description} failed ({_first_error(exc)}){where}"
        ) from exc


def _first_error(exc: BaseException) -> str:
    """The compiler's first error line from torch's build exception, else its first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() and not line.startswith("Error building extension"):
            return line[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]
