from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot import BotError, posting
from bot.channels import build_channels
from bot.channels.base import Channel, ChannelSettings, Retryable
from bot.checkpoints import ensure_active
from bot.cli import setup_logging
from bot.models import Delivery
from bot.secret import read_secret

TOKEN = "tok-3f9a1c77d2b84e0b"


class LeakySettings(ChannelSettings):
    token_env: str = "LEAKY_TOKEN"


class Leaky(Channel):
    """A careless channel library: it logs its token and puts it in its errors."""

    def __init__(self, name, settings, data_dir):
        super().__init__(name, settings, data_dir)
        self.token = read_secret(f"channel {name}", env=settings.token_env)
        self.calls = 0

    def deliver(self, post):
        self.calls += 1
        token = self.token.get_secret_value()
        logging.getLogger("leaky.lib").info("POST /statuses Authorization: Bearer %s", token)
        if self.calls == 1:
            raise RuntimeError(f"unexpected reply for token {token}")
        raise Retryable(f"HTTP 503 for {token}")


def test_secrets_stay_out_of_logs_database_and_outbox(settings, sessions, monkeypatch, capsys,
                                                       restore_logging):
    monkeypatch.setenv("LEAKY_TOKEN", TOKEN)
    setup_logging(verbose=False)
    ensure_active(sessions, settings)
    channels = build_channels(settings.channels, settings.data_dir)  # the real outbox
    channels["leaky"] = Leaky("leaky", LeakySettings(type="leaky"), settings.data_dir)
    settings.retry.base_delay_s = 0
    posting.post_once(sessions, settings, channels)
    posting.post_once(sessions, settings, channels)
    assert channels["leaky"].calls == 4  # post 1 is retried twice (backoff 0)

    err = capsys.readouterr().err
    assert "[secret]" in err and "Traceback" in err  # the leaks were there, and masked
    assert TOKEN not in err
    files = [p for p in settings.data_dir.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".db") for p in files) and any("outbox" in p.parts for p in files)
    for path in files:  # the database (and its WAL), images, outbox, gallery
        assert TOKEN.encode() not in path.read_bytes(), path
    with sessions() as s:
        errors = [d.last_error for d in s.query(Delivery).filter_by(channel="leaky")]
    assert errors == ["HTTP 503 for [secret]"] * 2


def test_read_secret_from_env_or_file(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("BOT_TEST_SECRET", " from-env \n")
    assert read_secret("x", env="BOT_TEST_SECRET").get_secret_value() == "from-env"
    file = tmp_path / "token"
    file.write_text("from-file\n")
    secret = read_secret("x", env="BOT_TEST_SECRET", file=file)
    assert secret.get_secret_value() == "from-file"
    assert "from-file" not in repr(secret) and "from-file" not in str(secret)


def test_missing_secret_names_where_to_put_it(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("BOT_NO_SUCH_SECRET", raising=False)
    with pytest.raises(BotError, match="set the environment variable BOT_NO_SUCH_SECRET"):
        read_secret("channel m", env="BOT_NO_SUCH_SECRET")
    with pytest.raises(BotError, match="cannot read secret file"):
        read_secret("channel m", file=tmp_path / "absent")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(BotError, match="empty"):
        read_secret("channel m", file=tmp_path / "empty")


def test_only_whole_tokens_are_masked_and_short_secrets_warned(monkeypatch, caplog):
    from bot import secret
    monkeypatch.setattr(secret, "_known", set())
    monkeypatch.setenv("BOT_SHORT", "x")
    monkeypatch.setenv("BOT_LONG", TOKEN)
    with caplog.at_level(logging.WARNING, logger="bot.secret"):
        read_secret("channel m", env="BOT_SHORT")
    assert "channel m: the secret in $BOT_SHORT is only 1 character" in caplog.text
    read_secret("channel m", env="BOT_LONG")
    text = f"next x-ray box: x; Bearer {TOKEN}, url=https://h/?t={TOKEN}&x=1, signed t%3D{TOKEN}"
    assert secret.redact(text) == ("next x-ray box: [secret]; Bearer [secret], "
                                   "url=https://h/?t=[secret]&[secret]=1, signed t%3D[secret]")
