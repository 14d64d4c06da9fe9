"""Database engines and sessions from a URL: PostgreSQL (psycopg 3) in production, SQLite embedded."""
from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
# seconds a new PostgreSQL connection may take (unless the URL sets connect_timeout): an unreachable host then
# fails fast (the API answers 503, a worker retries) instead of hanging on the system's TCP timeout
POSTGRES_CONNECT_TIMEOUT_S = 5


class DatabaseURLError(ValueError):
    """The database URL names a backend genq does not run on."""


def normalize_url(url: str) -> str:
    """Point PostgreSQL URLs at psycopg 3; accept `postgres://` and `postgresql://` as given by hosts."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, *, pre_ping: bool = True, autocommit: bool = False) -> Engine:
    """A pooled engine: SQLite with WAL and a busy timeout (creating the file's folder), or PostgreSQL.

    `pre_ping`: check each connection with a round trip when it leaves the pool (a long-lived process that
    must ride out database restarts quietly: workers, sweepers). Without it a connection the database dropped
    fails its first statement, which SQLAlchemy reports as a disconnect and answers by invalidating the whole
    pool, so one request sees the outage (a 503 in the API) and the next ones get new connections; the API
    takes that trade, since a pre-ping is a third of the round trips of a poll.
    `autocommit`: connections made in autocommit mode, for single-statement reads (no BEGIN and ROLLBACK
    around each one); never for writes that must commit together."""
    isolation = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    parsed = make_url(normalize_url(url))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            # each connection would get its own empty database: the API and the worker could never meet
            raise DatabaseURLError("SQLite needs a file: sqlite:///path/to/genq.db")
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **isolation,  # (a file never drops a connection: no pre-ping)
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            raise DatabaseURLError("PostgreSQL is reached through psycopg 3: postgresql+psycopg://…")
        connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
        return create_engine(parsed, pool_pre_ping=pre_ping, connect_args=connect_args, **isolation)
    raise DatabaseURLError(f"unsupported database {backend!r}: use postgresql+psycopg:// or sqlite:///")


def make_reader(engine: Engine, *, pre_ping: bool = True) -> Engine:
    """An autocommit engine on `engine`'s database, for one-statement reads; disposing `engine` disposes it
    too, so whoever owns `engine` owns both pools."""
    reader = make_engine(engine.url.render_as_string(hide_password=False), pre_ping=pre_ping, autocommit=True)
    event.listen(engine, "engine_disposed", lambda _engine: reader.dispose())
    return reader


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (they are handed to views and tasks)."""
    return sessionmaker(engine, expire_on_commit=False)


def ping(engine: Engine) -> None:
    """Raise if the database cannot answer a trivial query."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def rows_matched(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE run through a Session matched. Session.execute is typed as returning
    a Result; for these statements it is a CursorResult, which counts them."""
    return cast(CursorResult[Any], result).rowcount


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the API read while a worker writes; the busy timeout makes writers wait instead of failing.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
