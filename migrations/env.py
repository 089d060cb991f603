"""Alembic environment for the bot's database.

Run by the bot on start (it passes its own connection in `config.attributes`) and by the
`alembic` command (which gets the URL from the bot's settings: ./config.yaml, or
`-x config=PATH`). SQLite cannot ALTER most things, so migrations run in batch mode, which
copies the table.
"""

from logging.config import fileConfig

from alembic import context
from sqlalchemy.types import TypeDecorator

from bot.models import Base

config = context.config
target_metadata = Base.metadata


def render_item(kind, obj, autogen_context):
    # Write a column type like UTCDateTime as its plain SQL type: a migration must not import
    # app code that may change or vanish later.
    if kind == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True, render_item=render_item)
    with context.begin_transaction():
        context.run_migrations()


def database_url() -> str:
    from bot.config import load_settings
    return load_settings(context.get_x_argument(as_dictionary=True).get("config")).database_url


if context.is_offline_mode():
    context.configure(url=database_url(), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    run_migrations(connection)
else:
    # Only the alembic command sets up logging from alembic.ini; the bot keeps its own.
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    from bot.db import make_engine
    engine = make_engine(database_url())
    with engine.connect() as connection:
        run_migrations(connection)
