"""Engine and session factory for both engines (SQLite file by default, PostgreSQL in production)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Protocol, cast

from sqlalchemy import ColumnElement, DateTime, MetaData, any_, bindparam, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

# Stable constraint names so Alembic migrations are identical on both engines.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores UTC, returns aware UTC datetimes on both engines (SQLite drops the offset otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store UTC-aware datetimes only")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base shared by every bounded context's models."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: UTCDateTime()}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> AsyncEngine:
    """Create an engine with the per-engine settings that matter for correctness under concurrency."""
    kwargs: dict[str, Any] = {"echo": echo}
    if is_sqlite(url):
        # One file, many writers: WAL + a busy timeout make concurrent writers wait instead of failing.
        kwargs["connect_args"] = {"timeout": 30}
        if ":memory:" in url:
            raise ValueError("in-memory SQLite is not supported: every connection would see its own database")
        # A pool matters here too: an aiosqlite connection is a thread plus a file open (~10-30 ms).
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size
    else:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size
        # No pre-ping: it costs a round trip on every checkout (~0.6 ms of a ~1.4 ms caller lookup,
        # members_lookup bench). A connection that died with the server fails its next use instead;
        # is_disconnect() tells the callers that retry (call log, callbacks, agent states, lookups).
        kwargs["pool_recycle"] = 1800
        # Last in, first out: the connection used last is used next, so its prepared statements and its
        # server process's cached plans (foreign-key checks included) are warm. First in, first out
        # cycled every checkout through the whole pool: after a burst had opened 50 connections, or
        # after an ANALYZE, each statement was planned afresh on a cold backend (redemption bench:
        # batches of 50 took ~23 ms instead of ~17). Idle connections at the bottom expire by recycle.
        kwargs["pool_use_lifo"] = True
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # pysqlite's deferred BEGIN lets two writers both read then fail on the lock upgrade; take
            # the write lock up front so concurrent writers queue on busy_timeout instead. Sessions
            # opened with read_session() only read, and a deferred BEGIN lets them run beside a writer
            # (WAL) instead of queueing behind it.
            if conn.get_execution_options().get(READ_ONLY_OPTION):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def insert_for(session_or_dialect: AsyncSession | str, table: Any) -> Any:
    """The dialect's INSERT (with ON CONFLICT support) for `table`; both engines speak the same clause."""
    name = session_or_dialect if isinstance(session_or_dialect, str) else session_or_dialect.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported database dialect {name!r}")


def among(session: AsyncSession, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL as ``= ANY(:array)``: one statement text whatever the number
    of values, so asyncpg prepares it once instead of once per list length."""
    if session.get_bind().dialect.name == "postgresql":
        array = bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        return cast(ColumnElement[bool], column == any_(array))
    return cast(ColumnElement[bool], column.in_(list(values)))


READ_ONLY_OPTION = "cti_read_only"


def dialect_of(sessions: async_sessionmaker[AsyncSession]) -> str | None:
    """The dialect name ("postgresql", "sqlite") of the engine `sessions` is bound to, if any."""
    bind = sessions.kw.get("bind")
    return None if bind is None else str(bind.dialect.name)


@asynccontextmanager
async def read_session(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session for reads only (screen pops, lookups): on SQLite it does not take the write lock; on
    PostgreSQL it runs in autocommit, saving the BEGIN and ROLLBACK round trips (~0.3 ms of a 2 ms
    lookup budget, members_lookup bench)."""
    async with sessions() as session:
        options: dict[str, Any] = {READ_ONLY_OPTION: True}
        if session.get_bind().dialect.name == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        await session.connection(execution_options=options)
        yield session


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A unit of work: commit on success, roll back on any error."""
    async with sessions() as session, session.begin():
        yield session


class PgDriver(Protocol):
    """The part of asyncpg.Connection used here (asyncpg ships no type information)."""

    def is_in_transaction(self) -> bool: ...

    async def execute(self, query: str, *args: Any) -> str: ...

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def copy_records_to_table(
        self, table_name: str, *, records: Iterable[Sequence[Any]], columns: Sequence[str]
    ) -> str: ...


async def driver_connection(session: AsyncSession) -> PgDriver:
    """The asyncpg connection under the session, for COPY (binary, ~1 µs a row of client CPU where an
    INSERT of unnest() arrays costs ~6 µs: measured on 5,000-member batches) and hot statements that
    SQLAlchemy's per-statement work would dominate. Only once a statement has gone through the session."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = cast(PgDriver, raw.driver_connection)
    # SQLAlchemy's asyncpg adapter opens its transaction at the first statement through the session.
    # Check, never assume: a statement outside it would commit on its own (a COPY would break an
    # all-or-nothing batch; a FOR UPDATE would lock nothing).
    if not driver.is_in_transaction():
        raise RuntimeError("driver statement outside the session's transaction")
    return driver


def is_disconnect(exc: BaseException) -> bool:
    """True for errors a retry on a fresh connection can cure: the server restarted or the network
    dropped (the pool has already discarded the dead connection)."""
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, ConnectionError | OSError)
