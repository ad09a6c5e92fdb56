"""The Optuna side: storage, study names, claiming work, failed-trial recovery, best learning rate.

Layout. Every (task, method) pair has an evaluation study ``<task>/<method>/final/<sig>`` and,
with tuning, a tuning study ``<task>/<method>/tune/<sig>`` (``sig`` hashes every setting that
changes a trial's numbers, so a changed budget starts new studies instead of mixing results).
A trial's identity is its ``key`` user attribute (``lr=<repr>|seed=<seed>``, or ``tpe-<i>`` for a
TPE trial); a key is *done* once a trial with it is COMPLETE or PRUNED, or FAILED with an
``error`` attribute (a crash inside the trial, kept as a result).

Claiming. A worker takes one trial at a time under a storage-wide lock (``flock`` on a file next
to an SQLite database, ``pg_advisory_lock`` on PostgreSQL): it enqueues the next planned key of
the first study that has one and asks for it, so two workers never run the same key. A tuning
study runs one trial at a time, in a fixed order, so the pruner's decisions (which compare a trial
with those before it) are the same however many workers run; evaluation runs are independent.

Recovery. A trial left RUNNING by a process that died (its process id is gone on this host, or its
Optuna heartbeat is older than the grace period) is marked FAIL and its key is run again. FAILED
trials are hidden from the pruner, so a re-run is judged exactly as the first run would have been.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from optimist.comparison.safety import redact, scrub, secrets_of

__all__ = [
    "GRACE_PERIOD_S",
    "HEARTBEAT_S",
    "Heartbeat",
    "IgnoreFailedTrials",
    "StorageError",
    "best_lr",
    "key_of",
    "make_pruner",
    "make_sampler",
    "open_storage",
    "recover_dead_trials",
    "redact",
    "result_is_well_formed",
    "signature",
    "storage_lock",
    "trial_is_done",
]

HEARTBEAT_S = 10
GRACE_PERIOD_S = 120
FINAL_LR_DISTRIBUTION = FloatDistribution(1e-10, 1e6, log=True)
HOST = socket.gethostname()

optuna.logging.set_verbosity(optuna.logging.WARNING)


class StorageError(RuntimeError):
    """The storage URL cannot be opened."""


def sqlite_path(url: str) -> Path | None:
    """The database file of an ``sqlite:///`` URL, else None."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :].split("?", 1)[0]  # a query is not part of the file
        return Path(path) if path and path != ":memory:" else None
    return None


def normalize_url(url: str) -> str:
    """``postgresql://`` picks SQLAlchemy's default driver (psycopg 3 in SQLAlchemy 2.1); use
    psycopg2 (``optimist[postgres]``) when that is the one installed."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
            return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for ``url`` with heartbeats; ``StorageError`` if unreachable."""
    url = normalize_url(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 120}
    elif url.startswith("postgres"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    import sqlalchemy.exc

    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    storage = optuna.storages.RDBStorage(
                        url,
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=HEARTBEAT_S,
                        grace_period=GRACE_PERIOD_S,
                    )
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Two processes creating the tables of a new database at once: one loses the
                # race (duplicate table or type); the tables exist now, so try again.
                if attempt == 4:
                    raise
                time.sleep(0.5 + attempt)
    except ImportError:
        raise StorageError(
            f"cannot open storage {redact(url)}: its database driver is not installed "
            "(for PostgreSQL: pip install psycopg2-binary, or pip install 'optimist[postgres]')"
        ) from None
    except Exception as exc:  # any driver or connection error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = scrub(first, secrets_of(url))
        raise StorageError(f"cannot open storage {redact(url)}: {first}") from None
    if url.startswith("sqlite"):
        _use_wal(storage)
    return storage


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _use_wal(storage: optuna.storages.RDBStorage) -> None:
    """Write-ahead logging without an fsync per commit: a killed process loses nothing that was
    committed (only a power cut could), and readers do not block the writer. A trial makes a
    dozen small commits, so this is most of the bookkeeping time on 2-D functions."""
    import sqlalchemy

    sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
    storage.engine.dispose()


_PG_ENGINES: dict[str, Any] = {}
_THREAD_LOCK = threading.Lock()
_LOCK_KEY = 0x6F7074  # "opt"


@contextlib.contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """Serialize claims across processes (and machines, on a server database)."""
    with _THREAD_LOCK:
        path = sqlite_path(url)
        if path is not None:
            lock_path = path.with_name(path.name + ".lock")
            with open(lock_path, "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        if url.startswith("postgres"):
            import sqlalchemy

            engine = _PG_ENGINES.get(url)
            if engine is None:
                engine = sqlalchemy.create_engine(
                    normalize_url(url),
                    poolclass=sqlalchemy.pool.NullPool,
                    isolation_level="AUTOCOMMIT",
                )
                _PG_ENGINES[url] = engine
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
            return
        # Other databases: Optuna's own row locking (SELECT ... FOR UPDATE) guards the queue.
        yield


def signature(payload: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able settings dict."""
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def key_of(lr: float, seed: Any, params: tuple[tuple[str, float], ...] = ()) -> str:
    """The identity of a fixed-LR (and fixed-settings) trial."""
    extra = "".join(f"|{k}={v!r}" for k, v in params)
    return f"lr={lr!r}{extra}|seed={seed}"


_RESULT_KEYS = ("state", "final", "curves")


def result_is_well_formed(result: Any) -> bool:
    """Whether a trial's ``result`` attribute has the shape this package writes (a damaged
    database row does not, and is then run again rather than trusted)."""
    return (
        isinstance(result, dict)
        and all(k in result for k in _RESULT_KEYS)
        and result["state"] in ("complete", "pruned", "diverged")
        and isinstance(result["final"], dict)
        and isinstance(result["curves"], dict)
    )


def trial_is_done(trial: FrozenTrial) -> bool:
    """Finished for good: complete or pruned with a well-formed result, or failed with a
    recorded error."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return result_is_well_formed(trial.user_attrs.get("result"))
    return trial.state == TrialState.FAIL and "error" in trial.user_attrs


# --- samplers and pruners -------------------------------------------------------------------


class _WithoutFailedTrials:
    """A storage view whose trial lists leave out FAILED trials (everything else delegates)."""

    def __init__(self, storage: Any) -> None:
        self._inner = storage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_all_trials(self, study_id, deepcopy=True, states=None):
        trials = self._inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return [t for t in trials if t.state != TrialState.FAIL]


class IgnoreFailedTrials(optuna.pruners.BasePruner):
    """Wrap an Optuna pruner so that FAILED trials (runs cut off by a killed process) are not
    counted: a re-run is then judged exactly as an uninterrupted run would have been."""

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self.inner = inner
        self._views: dict[int, optuna.Study] = {}

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        view = self._views.get(study._study_id)
        if view is None:
            view = optuna.Study(
                study_name=study.study_name,
                storage=_WithoutFailedTrials(study._storage),
                sampler=study.sampler,
                pruner=self.inner,
            )
            self._views[study._study_id] = view
        return self.inner.prune(view, trial)


def make_pruner(name: str, n_evals: int) -> optuna.pruners.BasePruner:
    """``sha`` (successive halving), ``hyperband`` or ``none``, in units of evaluation points."""
    min_resource = max(1, n_evals // 9)
    if name == "sha":
        inner: optuna.pruners.BasePruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_resource, reduction_factor=3
        )
    elif name == "hyperband":
        inner = optuna.pruners.HyperbandPruner(
            min_resource=min_resource, max_resource=n_evals, reduction_factor=3
        )
    elif name == "none":
        return optuna.pruners.NopPruner()
    else:
        raise ValueError(f"unknown pruner {name!r}; use sha, hyperband or none")
    return IgnoreFailedTrials(inner)


def make_sampler(name: str, grid: list[float], seed: int) -> optuna.samplers.BaseSampler:
    if name == "grid":
        return optuna.samplers.GridSampler({"lr": list(grid)}, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; use grid or tpe")


# --- liveness -------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (dead, not yet reaped) still answers signal 0: read its state on Linux.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def recover_dead_trials(study: optuna.Study, *, own: bool = False) -> int:
    """Mark FAIL the RUNNING trials whose process is gone (and, with ``own``, those of this
    process: after an interrupt that came between claiming a trial and starting it); returns
    how many."""
    failed = 0
    me = os.getpid()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = trial.user_attrs.get("host"), trial.user_attrs.get("pid")
        if host == HOST and isinstance(pid, int) and ((own and pid == me) or not _pid_alive(pid)):
            with contextlib.suppress(Exception):
                study.tell(trial.number, state=TrialState.FAIL)
                failed += 1
    with warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    return failed


class Heartbeat:
    """Records Optuna heartbeats for one running trial from a background thread."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._stop = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        with contextlib.suppress(Exception):
            self._storage.record_heartbeat(self._trial_id)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --- results of a tuning study --------------------------------------------------------------


@dataclass(frozen=True)
class TuneOutcome:
    lr: float
    source: str
    """``"tuned"`` or ``"default (no tuning trial finished without diverging)"``."""
    params: tuple[tuple[str, float], ...] = ()
    """Other tuned settings (``--tune lr,momentum,...``), as (name, value) pairs."""


def best_lr(trials: list[FrozenTrial], default: float) -> TuneOutcome:
    """The LR of the COMPLETE, non-diverged trial with the lowest objective (ties: first)."""
    best: tuple[float, int, float, tuple] | None = None
    for t in trials:
        if t.state != TrialState.COMPLETE or t.value is None or not math.isfinite(t.value):
            continue
        if t.user_attrs.get("result", {}).get("state") == "diverged":
            continue
        extra = tuple(sorted((k, float(v)) for k, v in t.params.items() if k != "lr"))
        candidate = (t.value, t.number, float(t.params["lr"]), extra)
        if best is None or candidate < best:
            best = candidate
    if best is None:
        return TuneOutcome(default, "default (every tuning trial diverged or was cut short)")
    return TuneOutcome(best[2], "tuned", best[3])
