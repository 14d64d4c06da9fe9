"""Alembic environment: configured programmatically by genq.store.migrate (no alembic.ini).

genq.store.migrate hands over an open connection (config.attributes["connection"]) made by genq.store.db, so
migrations run with the same SQLite pragmas and PostgreSQL driver as the service.
"""
from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from genq.store.db import make_engine
from genq.store.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=config.get_main_option("sqlalchemy.url", "").startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:  # genq.store.migrate always sets it
        raise RuntimeError("no sqlalchemy.url: run migrations through genq.store.migrate (genq db upgrade)")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
