"""PostgreSQL for the tests: ``$FORECAST_TEST_POSTGRES`` is a URL whose role may create databases (.ci/postgres
starts one: postgresql://forecast:forecast@127.0.0.1:55432/forecast_test). Each test gets a fresh database, dropped
afterwards. Without the variable the tests that need PostgreSQL skip."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

ENV = "FORECAST_TEST_POSTGRES"


def _admin(url: str):  # noqa: ANN202 (a psycopg connection)
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                           dbname=u.database, autocommit=True, connect_timeout=10)


@contextlib.contextmanager
def fresh_database(base: str) -> Iterator[str]:
    """A new, empty database on the server of ``base`` (a SQLAlchemy URL), dropped on exit."""
    from sqlalchemy.engine import make_url

    name = f"ft_{uuid.uuid4().hex[:12]}"
    with _admin(base) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        _drop(base, name)


def _drop(base: str, name: str, tries: int = 20) -> None:
    """Drop database ``name``, ending its sessions. A role without pg_signal_backend cannot end an autovacuum
    worker that happens to be in it (it belongs to no role), so that refusal is waited out: the worker finishes."""
    import time

    import psycopg

    for attempt in range(tries):
        try:
            with _admin(base) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg.errors.InsufficientPrivilege:
            if attempt == tries - 1:
                raise
            time.sleep(0.5)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the test server; the test skips without ``$FORECAST_TEST_POSTGRES``."""
    base = os.environ.get(ENV)
    if not base:
        pytest.skip(f"{ENV} is not set (.ci/postgres starts a server)")
    with fresh_database(base) as url:
        yield url
