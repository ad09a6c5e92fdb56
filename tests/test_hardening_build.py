"""Regression tests for issue 7, items 3 and 4: the extension build lock and cache key.

Each scenario runs in a subprocess with a timeout, so a hang fails the test instead of the run.
A tiny pybind11 extension stands in for the kernels where a build is needed (seconds, not a
minute); the real kernels are used where the test is about them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import optimist
from optimist.optim import _build, engine, native

# subprocesses and small builds: about two minutes on 2 cores
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not engine.available(), reason="needs a C++ toolchain"),
]

MINI_SOURCE = textwrap.dedent(
    """
    #include <pybind11/pybind11.h>
    int answer() { return 42; }
    PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("answer", &answer); }
    """
)
LOAD_MINI = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from optimist.optim import _build
    module = _build.load_extension("optimist_test", [Path(sys.argv[1])], [], [],
                                   description="test extension")
    assert module.answer() == 42
    print("loaded")
    """
)


def run_python(code: str, *args: str, timeout: float = 300, **env: str):
    """Run ``code`` in a fresh interpreter; returns (completed process, seconds)."""
    full_env = {**os.environ, **env}
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return out, time.monotonic() - start


@pytest.fixture
def mini(tmp_path: Path) -> tuple[Path, Path]:
    """A source file of the tiny extension and an empty TORCH_EXTENSIONS_DIR."""
    source = tmp_path / "checkout1" / "mini.cpp"
    source.parent.mkdir()
    source.write_text(MINI_SOURCE)
    extensions = tmp_path / "extensions"
    extensions.mkdir()
    return source, extensions


def test_build_is_announced_and_then_loaded_without_rebuild(mini):
    source, extensions = mini
    first, _ = run_python(LOAD_MINI, str(source), TORCH_EXTENSIONS_DIR=str(extensions))
    assert first.returncode == 0, first.stderr
    assert "compiling test extension" in first.stderr
    # the same bytes at another path (a second checkout) share the build
    copy = source.parent.parent / "checkout2" / "mini.cpp"
    copy.parent.mkdir()
    shutil.copy(source, copy)
    for path in (source, copy):
        again, _ = run_python(LOAD_MINI, str(path), TORCH_EXTENSIONS_DIR=str(extensions))
        assert again.returncode == 0, again.stderr
        assert "compiling" not in again.stderr, again.stderr
    # changed bytes are a new build, announced again
    source.write_text(MINI_SOURCE.replace("42", "42 + 0"))
    changed, _ = run_python(LOAD_MINI, str(source), TORCH_EXTENSIONS_DIR=str(extensions))
    assert changed.returncode == 0, changed.stderr
    assert "compiling test extension" in changed.stderr


def test_stale_torch_lock_from_a_killed_build_is_removed(mini):
    source, extensions = mini
    name = _build.extension_name("optimist_test", [source], [], [])
    build_dir = extensions / name
    build_dir.mkdir()
    (build_dir / "lock").write_text("")  # what a build killed inside torch's load leaves
    out, _ = run_python(LOAD_MINI, str(source), timeout=240, TORCH_EXTENSIONS_DIR=str(extensions))
    assert out.returncode == 0, out.stderr
    assert "removing the stale build lock" in out.stderr and str(build_dir / "lock") in out.stderr
    assert "compiling test extension" in out.stderr
    assert not (build_dir / "lock").exists()


def test_build_lock_of_a_killed_builder_does_not_block(mini):
    """A builder killed with SIGKILL while holding the lock (its pid now gone) leaves
    ``optimist.lock``, its owner file and torch's ``lock``: the next process builds at once."""
    source, extensions = mini
    name = _build.extension_name("optimist_test", [source], [], [])
    build_dir = extensions / name
    build_dir.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from optimist.optim import _build\n"
            "with _build._build_lock(Path(sys.argv[1]), 'test extension'):\n"
            "    (Path(sys.argv[1]) / 'lock').touch()\n"
            "    print('locked', flush=True); time.sleep(600)",
            str(build_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
    finally:
        holder.kill()
        holder.wait()
    assert (build_dir / "optimist.lock.owner").read_text().startswith(f"pid {holder.pid} ")
    out, _ = run_python(
        LOAD_MINI,
        str(source),
        timeout=240,
        TORCH_EXTENSIONS_DIR=str(extensions),
        OPTIMIST_BUILD_WAIT="600",
    )
    assert out.returncode == 0, out.stderr
    assert "waiting" not in out.stderr
    assert "removing the stale build lock" in out.stderr
    assert "compiling test extension" in out.stderr


def test_built_kernels_load_without_taking_the_lock():
    """A leftover torch ``lock`` beside the built kernels neither blocks nor rebuilds."""
    build_dir = Path(engine.load().__file__).parent
    lock = build_dir / "lock"
    created = not lock.exists()
    lock.touch()
    try:
        out, _ = run_python(
            "from optimist.optim import engine; assert engine.available(); print('ok')",
            timeout=120,
        )
    finally:
        if created:
            lock.unlink(missing_ok=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
    assert "compiling" not in out.stderr


def test_second_checkout_loads_the_kernels_without_recompiling(tmp_path):
    package = Path(optimist.__file__).parent
    shutil.copytree(package, tmp_path / "optimist", ignore=shutil.ignore_patterns("__pycache__"))
    code = textwrap.dedent(
        f"""
        import optimist
        from optimist.optim import engine
        assert optimist.__file__.startswith({str(tmp_path)!r}), optimist.__file__
        assert engine.available()
        print("ok")
        """
    )
    out, seconds = run_python(code, timeout=240, PYTHONPATH=str(tmp_path))
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
    assert "compiling" not in out.stderr, out.stderr
    assert seconds < 45, f"loading the cached kernels took {seconds:.1f} s"  # a build: 1-3 min


def test_lock_held_by_a_live_process_is_waited_on_briefly_then_falls_back(tmp_path):
    """Another process holding the build lock: a message, a bounded wait, a warning naming the
    lock, and the per-tensor path."""
    prefix = "optimist_engine_locktest"
    name = _build.extension_name(prefix, native.SOURCES, native.CFLAGS, native.LDFLAGS)
    build_dir = tmp_path / name
    build_dir.mkdir()
    lock_path = build_dir / "optimist.lock"
    (build_dir / "optimist.lock.owner").write_text("pid 12345 on testhost since earlier\n")
    code = textwrap.dedent(
        f"""
        import warnings
        import torch
        import optimist.optim as oo
        from optimist.optim import engine, native
        native.NAME_PREFIX = {prefix!r}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert engine.available() is False
        (warning,) = caught
        print("WARNING:", warning.message)
        p = torch.ones(3, requires_grad=True)
        p.grad = torch.ones(3)
        oo.Adam([p], lr=0.1).step()
        assert p[0].item() < 1.0
        """
    )
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        out, seconds = run_python(
            code, timeout=120, TORCH_EXTENSIONS_DIR=str(tmp_path), OPTIMIST_BUILD_WAIT="2"
        )
    finally:
        os.close(fd)
    assert out.returncode == 0, out.stderr
    assert "waiting up to 2 s for pid 12345 on testhost" in out.stderr
    assert "WARNING: optimist: the C++ optimizer engine is unavailable" in out.stdout
    assert str(lock_path) in out.stdout
    assert "compiling" not in out.stderr
