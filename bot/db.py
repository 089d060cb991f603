"""The database: engine, migrations to head on start, sessions."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from bot import BotError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str) -> Engine:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        if engine.url.database and engine.url.database != ":memory:":
            Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys = ON")  # SQLite ignores them otherwise
            # The daemon and a manual `post` or `status` share the file: wait, don't fail.
            cur.execute("PRAGMA busy_timeout = 30000")
            cur.execute("PRAGMA journal_mode = WAL")  # readers don't block the writer
            cur.close()
    return engine


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to head; refuse a database written by newer code."""
    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)
    known = {s.revision for s in script.walk_revisions()}
    with engine.begin() as conn:
        current = MigrationContext.configure(conn).get_current_heads()
        newer = [rev for rev in current if rev not in known]
        if newer:
            raise BotError(f"the database {engine.url.render_as_string()} is at schema revision "
                           f"{', '.join(newer)}, which this code does not know: it was written "
                           "by a newer version of waifu-gen; update the code")
        if set(current) != set(script.get_heads()):
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            log.info("database schema upgraded from %s to %s",
                     ", ".join(current) or "empty", ", ".join(script.get_heads()))


def open_database(url: str) -> sessionmaker[Session]:
    engine = make_engine(url)
    upgrade(engine)
    return sessionmaker(engine, expire_on_commit=False)
