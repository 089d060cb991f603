"""Curated posts: which critic ranks a still post's candidates, or why none does.

A still post draws `bot.curate.candidates` fresh seeds; the render worker draws them and scores
them with the realism critic (gan/realism.py: a Gaussian of the training faces' Lite0
features, shipped as checkpoints/critic.npz), and `posting.draw` posts the best-scoring one
(with `min_score`: the first scoring at least that) that passes the dedup and memorisation
checks (`gan.pick`). Curation is off with
`candidates: 1` or `critic: null`, and off with a warning (once a process) when the critic file
is not there, as the memorisation guard is without its faces. This module reads the file only
to check it (numpy): the scoring network stays in the render worker.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bot import BotError
from bot.config import Curate
from gan import DataError, file_sha256, load_critic

log = logging.getLogger(__name__)

_warned: set[Path] = set()  # critic files already warned about (once per process)


def _missing_text(path: Path) -> str:
    return (f"curation off: the realism critic {path} (bot.curate.critic) is not there, so "
            "each post is the first fresh seed, not the best of bot.curate.candidates; build "
            "it with `python train.py critic FACES --out PATH`, or set critic: null to silence "
            "this")


def critic_file(curate: Curate | None) -> Path | None:
    """The critic file that ranks a still post's candidates; None when posts are not curated
    (candidates 1, critic null, or the file missing: then a warning, once)."""
    if curate is None or curate.candidates == 1 or curate.critic is None:
        return None
    if not curate.critic.is_file():
        if curate.critic not in _warned:
            _warned.add(curate.critic)
            log.warning(_missing_text(curate.critic))
        return None
    return curate.critic


def critic_key(path: Path) -> str:
    """What identifies the critic's scores (images drawn ahead keep theirs with this): the
    file's hash, so a rebuilt critic is never mixed with the old one's scores."""
    return file_sha256(path)[:16]


def check_critic(path: Path) -> int:
    """Read the critic file (cached), BotError naming the setting when it is not one; returns
    how many training faces it was fitted to."""
    try:
        return load_critic(path).faces
    except DataError as e:
        raise BotError(f"bot.curate.critic: {e}") from None


def _which(curate: Curate) -> str:
    """Which candidate a curated post takes, in words."""
    if curate.min_score is None:
        return f"the best of {curate.candidates} candidates"
    return (f"the first of {curate.candidates} candidates scoring at least "
            f"{curate.min_score:g} (else the best)")


def describe_curation(curate: Curate) -> str:
    """One line for `status`, reading nothing but the file's presence."""
    if curate.candidates == 1:
        return "off (bot.curate.candidates is 1)"
    if curate.critic is None:
        return "off (bot.curate.critic is null)"
    if not curate.critic.is_file():
        return (f"off (the critic {curate.critic} is not there: build it with `python train.py "
                "critic FACES --out PATH`)")
    return f"on ({_which(curate)} by the critic {curate.critic})"


def log_curation(curate: Curate) -> None:
    """Say at start whether posts are curated, and fail now, not at the first post, when the
    critic file cannot be read."""
    path = critic_file(curate)  # warns when the file is missing
    if path is None:
        if curate.candidates == 1 or curate.critic is None:
            log.info("curation %s", describe_curation(curate))
        return
    faces = check_critic(path)
    log.info("curation on: each still post is %s by the realism critic %s (%d training faces)",
             _which(curate), path, faces)
