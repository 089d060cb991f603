"""Secrets: read from environment variables or files named in the config, never from the config.

Every secret read is remembered so that `redact` can blank it out of log records and of error
texts before they are stored: a channel library that echoes a token in an exception message must
not leak it into the database or the log.
"""

from __future__ import annotations

import logging
import os
import re
from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr

from bot import BotError

log = logging.getLogger(__name__)

_known: set[str] = set()
MASK = "[secret]"
# Real tokens are long; a shorter one is likely a placeholder, and masking it would be guesswork.
MIN_LENGTH = 8
# A short secret is masked only where it stands as a whole token: a test token "x" must not
# turn "next" into "ne[secret]t". A long one is masked wherever it appears, also inside other
# text (percent-encoded in a signed URL, "%3D<token>%26"): there it is a leak, not a word.
_TOKEN_CHARS = r"[A-Za-z0-9_\-]"


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
    if len(value) < MIN_LENGTH:
        where = f"the file {file}" if file is not None else f"${env}"
        log.warning("%s: the secret in %s is only %d character%s long; real tokens are longer "
                    "(a placeholder?)", what, where, len(value), "" if len(value) == 1 else "s")
    _known.add(value)
    return SecretStr(value)


@lru_cache(maxsize=4)
def _pattern(known: frozenset[str]) -> re.Pattern[str] | None:
    # Longest first, so a secret that contains another is masked whole.
    values = sorted(known, key=len, reverse=True)
    if not values:
        return None
    return re.compile("|".join(
        re.escape(v) if len(v) >= MIN_LENGTH else
        f"(?<!{_TOKEN_CHARS}){re.escape(v)}(?!{_TOKEN_CHARS})" for v in values))


def redact(text: str) -> str:
    pattern = _pattern(frozenset(_known))
    return text if pattern is None else pattern.sub(MASK, text)


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
