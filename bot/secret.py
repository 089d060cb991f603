"""Secrets: read from environment variables or files named in the config, never from the config.

Every secret read is remembered so that `redact` can blank it out of log records and of error
texts before they are stored: a channel library that echoes a token in an exception message must
not leak it into the database or the log.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import SecretStr

from bot import BotError

_known: set[str] = set()
MASK = "[secret]"


def read_secret(what: str, env: str | None = None, file: Path | None = None) -> SecretStr:
    """The secret from the file if one is named, else from the environment variable `env`."""
    if file is not None:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise BotError(f"{what}: cannot read secret file {file}: {e.strerror}") from None
    elif env is not None and os.environ.get(env):
        value = os.environ[env].strip()
    else:
        raise BotError(f"{what}: no secret given; set the environment variable {env} "
                       "or name a file in the config")
    if not value:
        raise BotError(f"{what}: the secret is empty")
    _known.add(value)
    return SecretStr(value)


def redact(text: str) -> str:
    # Longest first, so a secret that contains another is masked whole.
    for value in sorted(_known, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks known secrets in every record passing a handler, whichever library logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _known:
            record.msg = redact(record.getMessage())
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True
