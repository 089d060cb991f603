"""The database: engine, migrations to head on start, sessions."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bot import BotError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


SETTING = "bot.database_url"
# The driver modules SQLAlchemy imports, and what installs them.
INSTALL = {"psycopg": "pip install -e '.[postgres]' (or pip install 'psycopg[binary]')",
           "psycopg2": "pip install psycopg2-binary", "MySQLdb": "pip install mysqlclient",
           "pymysql": "pip install pymysql"}


def _create(url: str) -> Engine:
    """create_engine, with a missing dialect or driver as one line naming the setting."""
    try:
        return create_engine(url)
    except NoSuchModuleError:
        kind = url.partition(":")[0]
        raise BotError(f"{SETTING}: unknown database kind '{kind}' (SQLAlchemy knows e.g. "
                       "sqlite:///data/bot/bot.db, postgresql+psycopg://user@host/db)") from None
    except ImportError as e:  # the dialect is known, its driver is not installed
        module = e.name or str(e)
        how = INSTALL.get(module, f"pip install {module}")
        raise BotError(f"{SETTING}: the database driver '{module}' is not installed: "
                       f"{how}") from None


def make_engine(url: str) -> Engine:
    engine = _create(url)
    if engine.dialect.name == "sqlite":
        if engine.url.database and engine.url.database != ":memory:":
            folder = Path(engine.url.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise BotError(f"{SETTING}: cannot create the folder {folder} for the SQLite "
                               f"file: {e.strerror}") from None

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
    try:
        upgrade(engine)
    except OperationalError as e:  # no server, refused login, an unwritable SQLite file
        reason = " ".join(str(e.orig or e).split())
        raise BotError(f"{SETTING}: cannot open the database {engine.url.render_as_string()}: "
                       f"{reason}") from None
    return sessionmaker(engine, expire_on_commit=False)
