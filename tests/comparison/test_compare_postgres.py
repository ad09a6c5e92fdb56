"""Two processes on one study stored in a real PostgreSQL server (``scripts/start_postgres.sh``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from collections import Counter

import optuna
from conftest import TINY_ARGS, comparable

from helpers import require
from optimist.comparison.safety import secrets_of
from optimist.comparison.study import normalize_url

HOW = (
    'eval "$(scripts/start_postgres.sh)" (sets OPTIMIST_TEST_POSTGRES_URL) and '
    "pip install psycopg2-binary"
)


def _scratch_database(url: str) -> tuple[str, str]:
    """Create an empty database next to ``url``'s; returns (its URL, its name)."""
    import psycopg2

    name = f"optimist_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return url.rsplit("/", 1)[0] + "/" + name, name


def _drop_database(url: str, name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.close()


def test_two_processes_share_one_postgres_study(tiny_study, tmp_path):
    url = os.environ.get("OPTIMIST_TEST_POSTGRES_URL", "")
    require(
        bool(url) and importlib.util.find_spec("psycopg2") is not None,
        "a PostgreSQL server and the psycopg2 driver",
        HOW,
    )
    db_url, name = _scratch_database(url)
    try:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "optimist",
                    *TINY_ARGS,
                    "--storage",
                    db_url,
                    "--out",
                    str(tmp_path / f"machine{i}"),
                    "--quiet",
                    "--no-report",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]

        # every planned trial ran exactly once, and both processes took part
        keys: Counter[str] = Counter()
        pids = set()
        storage = normalize_url(db_url)  # the installed driver (psycopg2) for optuna here too
        for summary in optuna.get_all_study_summaries(storage):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            for t in study.get_trials(deepcopy=False):
                assert t.state in (
                    optuna.trial.TrialState.COMPLETE,
                    optuna.trial.TrialState.PRUNED,
                ), (summary.study_name, t.state)
                keys[f"{summary.study_name}|{t.user_attrs['key']}"] += 1
                pids.add(t.user_attrs["pid"])
        assert len(keys) == 30
        assert set(keys.values()) == {1}
        assert len(pids) == 2

        reference = comparable(json.loads((tiny_study / "results.json").read_text()))
        secrets = [v for v in secrets_of(db_url) if len(v) >= 4]
        for i in range(2):
            document = json.loads((tmp_path / f"machine{i}" / "results.json").read_text())
            assert document["protocol"]["storage"].startswith("postgresql")
            assert comparable(document) == reference
            for path in (tmp_path / f"machine{i}").rglob("*"):  # no password in any output
                if path.is_file():
                    data = path.read_bytes()
                    assert not any(secret.encode() in data for secret in secrets), path
    finally:
        _drop_database(url, name)
