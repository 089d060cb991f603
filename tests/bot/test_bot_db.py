from __future__ import annotations

import argparse
import io
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from bot import BotError
from bot.db import MIGRATIONS, alembic_config, make_engine, open_database, upgrade
from bot.models import Base, Checkpoint, Delivery, DeliveryState

TABLES = {"checkpoints", "posts", "deliveries", "channel_states"}
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def _revision(engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_upgrade_from_empty_creates_the_tables(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'bot.db'}")
    upgrade(engine)
    assert TABLES <= set(inspect(engine).get_table_names())
    assert _revision(engine) == HEAD
    upgrade(engine)  # at head already: a no-op, not an error
    assert _revision(engine) == HEAD


def test_models_match_the_migrations(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []



def test_delivery_states_are_the_ones_the_migrated_database_allows(tmp_path: Path):
    """compare_metadata skips CHECK constraints: a DeliveryState added without a migration
    would only fail on the first row written in it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    upgrade(engine)
    with engine.connect() as conn:
        ddl = conn.scalar(text("SELECT sql FROM sqlite_master WHERE name = 'deliveries'"))
    (model_check,) = [str(c.sqltext) for c in Delivery.__table__.constraints
                      if getattr(c, "sqltext", None) is not None]
    assert model_check in ddl
    assert [str(s) for s in DeliveryState] == ["pending", "posted", "failed"]  # the stored values

def test_downgrade_and_upgrade_round_trip(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    upgrade(engine)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert not TABLES & set(inspect(engine).get_table_names())
    assert _revision(engine) is None
    upgrade(engine)
    assert TABLES <= set(inspect(engine).get_table_names())


def test_alembic_command_reads_the_url_from_the_bot_config(tmp_path: Path, restore_logging):
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text("bot:\n  database_url: sqlite:///cli.db\n")
    cfg = Config(str(MIGRATIONS.parent / "alembic.ini"),
                 cmd_opts=argparse.Namespace(x=[f"config={cfg_file}"]))
    command.upgrade(cfg, "head")
    # The relative SQLite path resolves against the config file's folder.
    assert _revision(make_engine(f"sqlite:///{tmp_path / 'cli.db'}")) == HEAD


def test_database_newer_than_the_code_is_refused(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    with pytest.raises(BotError, match="revision f00dfeed.*newer version"):
        open_database(str(engine.url))


def test_only_one_checkpoint_can_be_active(sessions):
    now = datetime.now(timezone.utc)
    with sessions() as s:
        for i in range(2):
            s.add(Checkpoint(path=f"/c{i}.pt", sha256=f"{i:064d}", variant="dcgan", step=0,
                             images_seen=0, published_at=now, active=True))
        with pytest.raises(IntegrityError):
            s.commit()


def test_times_come_back_aware_utc(sessions):
    when = datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc)
    with sessions.begin() as s:
        s.add(Checkpoint(path="/c.pt", sha256="a" * 64, variant="dcgan", step=0,
                         images_seen=0, published_at=when))
    with sessions() as s:
        assert s.query(Checkpoint).one().published_at == when


def test_migrations_render_for_postgresql(tmp_path: Path):
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text("bot:\n  database_url: postgresql://bot@db.example/bot\n")
    sql = io.StringIO()
    cfg = Config(str(MIGRATIONS.parent / "alembic.ini"), output_buffer=sql,
                 cmd_opts=argparse.Namespace(x=[f"config={cfg_file}"]))
    command.upgrade(cfg, "head", sql=True)  # offline: renders the SQL, connects to nothing
    rendered = sql.getvalue()
    assert "CREATE UNIQUE INDEX uq_checkpoints_one_active ON checkpoints (active) WHERE active" \
        in rendered
    assert "published_at TIMESTAMP WITH TIME ZONE NOT NULL" in rendered
