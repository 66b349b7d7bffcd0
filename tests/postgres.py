"""A scratch PostgreSQL schema per test, or a skip with the reason when no server answers.

The server is ``NEXTBEST_TEST_POSTGRES`` or ``postgresql://postgres@127.0.0.1:5432/test``
(trust auth on loopback, as on the project's machines and CI). Each test gets its own schema
``t_<32 hex>`` (a uuid4: unique across concurrent runs; the name never changes an outcome),
named in the URL's ``search_path`` and dropped with everything in it afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

_unreachable: list[str] = []  # the reason, once a connection attempt failed this session


def server_url() -> str:
    return os.environ.get("NEXTBEST_TEST_POSTGRES", DEFAULT_URL)


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    """A connection to the test server, or a skip naming where it was looked for."""
    url = server_url()
    if _unreachable:
        pytest.skip(_unreachable[0])
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        info = psycopg.conninfo.conninfo_to_dict(url)
        where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _unreachable.append(f"PostgreSQL not reachable at {where}: {first_line}")
        pytest.skip(_unreachable[0])


def with_search_path(url: str, schema: str) -> str:
    """``url`` with ``search_path`` set to ``schema`` (libpq's ``options`` parameter)."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={quote(f'-csearch_path={schema}', safe='')}"


def reachable_url() -> str:
    """The test server's URL, or a skip saying why it cannot be used."""
    _admin().close()
    return server_url()


@contextmanager
def scratch_schema() -> Iterator[str]:
    """A URL whose tables live in a new, empty schema, dropped on exit."""
    admin = _admin()
    schema = f"t_{uuid.uuid4().hex}"
    try:
        admin.execute(f"CREATE SCHEMA {schema}")
        yield with_search_path(server_url(), schema)
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()
