"""The bot's settings: the `bot:` section of config.yaml, checked once before anything runs.

The file is read by gan's one loader (gan/configfile.py), which the trainer uses too: overrides
are rooted at the top of the file (`bot.schedule.interval_minutes=1`), and every mistake is
listed with its source and key. Relative paths (and a relative SQLite file in `database_url`)
resolve against the folder of the config file, so the bot finds the same files whatever the
working directory; typed on the command line, or with no config file, against the working
directory. The bot makes them absolute. Secrets never live here: channels name an environment
variable or a file and read it with `bot.secret.read_secret`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError,
                      ValidationInfo, field_validator, model_validator)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.channels import channel_class
from bot.channels.base import ChannelSettings
from bot.fields import Hashtag, RelPath, Template
from gan import (TOP_LEVEL_KEYS, CommandLineValue, ConfigError, ConfigFile, describe_errors,
                 find_config, read_config)

__all__ = ["ConfigError", "Settings", "load_settings", "settings_of"]


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str | None = None
    interval_minutes: float | None = Field(360.0, gt=0)
    timezone: str = "UTC"
    misfire_grace_s: int = Field(3600, ge=1)
    post_at_start: bool = True

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{v}'") from None
        return v

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        fields = v.split()
        if len(fields) != 5:
            raise ValueError(f"'{v}' needs 5 fields: minute hour day month weekday")
        # APScheduler counts weekday 0 as Monday where cron means Sunday: names are unambiguous.
        if re.search(r"\d", fields[4]):
            raise ValueError(f"'{v}': write weekdays as names (mon-fri, sun), not numbers")
        # Here: APScheduler is imported by the daemon, not by every command that reads settings.
        from apscheduler.triggers.cron import CronTrigger
        try:
            CronTrigger.from_crontab(v, timezone="UTC")
        except ValueError as e:
            raise ValueError(f"'{v}' is not a valid cron expression: {e}") from None
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        if (self.cron is None) == (self.interval_minutes is None):
            raise ValueError("set exactly one of cron and interval_minutes (the other to null)")
        return self


class Retry(BaseModel):
    """Transient failures (network, timeouts, 5xx) are retried, the wait doubling from
    base_delay_s up to max_delay_s, until give_up_after_h after the first of them; then the
    delivery is failed (`retry` revives it). Permanent ones (401, 403, 422) fail at once."""

    model_config = ConfigDict(extra="forbid")

    give_up_after_h: float = Field(24.0, gt=0)
    # Also give up after this many attempts; null: only give_up_after_h decides. A rate limit
    # (429) never counts as an attempt.
    max_attempts: int | None = Field(None, ge=1)
    base_delay_s: float = Field(30.0, ge=0)
    max_delay_s: float = Field(3600.0, ge=0)
    poll_s: float = Field(60.0, gt=0)


class ImageSettings(BaseModel):
    """What channels get (the outbox too): the stored 64x64 image enlarged. The stored image,
    its hash and `regenerate` stay on the 64x64 original."""

    model_config = ConfigDict(extra="forbid")

    # 8: 512x512. At most 16 (1024x1024, a PNG of at most ~3 MB: within X's 5 MB and
    # Mastodon's 16 MB image limits).
    scale: int = Field(8, ge=1, le=16)
    # nearest keeps the pixels crisp; lanczos smooths them.
    resample: Literal["nearest", "lanczos"] = "nearest"


class Dedup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_distance: int = Field(6, ge=0, le=64)
    max_draws: int = Field(20, ge=1)


class Memorisation(BaseModel):
    """The guard against posting a near-copy of a training face (docs/metrics.md)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    # An index file of the training faces (`python train.py index FACES --out PATH`); null: the
    # bot keeps its own, <data_dir>/faces-index.npz, built once from `faces`.
    index: RelPath | None = None
    # The training faces folder the bot indexes itself when `index` is null (again when the
    # index was built from another folder). A folder that is not there: guard off, with a
    # warning at start; null (and index null): guard off.
    faces: RelPath | None = Path("../shared/data/animefaces")
    # An image nearer than this to a training face (gray16 distance: 0 = a copy, ~0.5 and up =
    # another face) is drawn again. 0.35: a training face fed as a sample is at ~0.01; pairs of
    # training faces this close are the same drawing; fresh samples of the shipped checkpoint
    # were all at >= 0.47 (docs/metrics.md).
    min_distance: float = Field(0.35, ge=0, le=2)


class Curate(BaseModel):
    """Curated posts (bot/curate.py): a still post draws `candidates` fresh seeds and posts the
    one the realism critic (gan/realism.py) scores highest (or, with `min_score`, the first
    good enough) that passes the dedup and memorisation checks. Not for `post --seed`, replies
    or animated posts."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    # Candidates drawn for each still post; 1: no curation (the first fresh seed is posted).
    candidates: int = Field(8, ge=1, le=32)
    # The critic file (`python train.py critic FACES --out PATH`); null: no curation. A file
    # that is not there: no curation, with a warning.
    critic: RelPath | None = Path("checkpoints/critic.npz")
    # null: post the best-scoring candidate. A score (e.g. 0.65): post the first candidate, in
    # the order drawn, that scores at least this, else the best: cuts only the tail of poor
    # faces, keeping the posts as varied as uncurated ones (README: Curated posts).
    min_score: float | None = Field(None, gt=0)


Visibility = Literal["public", "unlisted", "private", "direct"]


class Replies(BaseModel):
    """Replies to mentions that ask for a face (Mastodon; bot/replies.py)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    channel: str = "mastodon"  # the Mastodon channel (by its name here) whose mentions count
    # A mention asks for a face when its text has one of these (any case).
    words: list[Annotated[str, Field(min_length=1)]] = Field(["draw me"], min_length=1)
    poll_s: float = Field(60.0, ge=5)  # Mastodon allows 300 requests per 5 minutes
    # Replies per asking account per UTC day, and in all per UTC day; null: no limit.
    per_account_per_day: int | None = Field(3, ge=1)
    per_day: int | None = Field(50, ge=1)
    only_followed: bool = False  # answer only accounts the bot's account follows
    # The most public a reply may be; never more public than the mention it answers.
    visibility: Visibility = "unlisted"
    caption: Template = (
        "Your face (seed {seed}), drawn by a {variant} GAN from {checkpoint} after {kimg}k "
        "training images. {quality}")


class Animation(BaseModel):
    """Animated posts: a looping walk through the latent space between a few fresh faces, as
    a GIF and an MP4 (bot/animation.py), on their own schedule."""

    model_config = ConfigDict(extra="forbid")

    # When to post one, e.g. "0 12 * * sun" (weekdays as names; bot.schedule.timezone); null:
    # never on a schedule (`python -m bot post --animated` still makes one).
    cron: str | None = None
    seeds: int = Field(3, ge=2, le=8)  # faces the walk visits before it returns to the first
    frames_per_seed: int = Field(16, ge=2, le=60)  # frames from one face to the next
    fps: float = Field(12.0, ge=2, le=50)
    caption: Template = (
        "A walk through the latent space of a {variant} GAN ({checkpoint}, {kimg}k training "
        "images), from seed {seed} and back. {quality}")
    alt_text: Template = (
        "An AI-generated animation: anime-style faces drawn by a GAN morph into one another "
        "and back, 64 by 64 pixels (seed {seed} first).")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str | None) -> str | None:
        return Schedule._valid_cron(v)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    database_url: str = "sqlite:///data/bot/bot.db"
    data_dir: RelPath = Path("data/bot")
    default_checkpoint: RelPath = Path("checkpoints/default.pt")
    # When the active checkpoint's file goes missing or changes: publish the default and go on
    # posting (logged as an error) rather than post nothing until someone notices.
    fallback_to_default: bool = True
    caption: Template = (
        "Face #{post_number} (seed {seed}), drawn by a {variant} GAN from {checkpoint} "
        "after {kimg}k training images. {quality}")
    alt_text: Template = (
        "An AI-generated anime-style face, drawn at 64 by 64 pixels by a GAN (seed {seed}).")
    # The metrics.json key shown as {quality}: fld (`python train.py evaluate`'s default,
    # EfficientNet-Lite2 features), fhd (HOG), fid (with the Inception weights), kid_mean,
    # precision, recall.
    quality_metric: str = "fld"
    # Appended to the caption by each channel, in order, as many as fit its limit (Mastodon:
    # the server's, 500 by default; X: 280); a tag that does not fit is left out.
    hashtags: list[Hashtag] = []
    # Posts per UTC day at most, by hand or on the schedule (counted in the posts table);
    # null: no cap.
    max_posts_per_day: int | None = Field(8, ge=1)
    schedule: Schedule = Schedule()
    retry: Retry = Retry()
    dedup: Dedup = Dedup()
    image: ImageSettings = ImageSettings()
    # A mapping, not an instance, so that validation resolves its paths against the config
    # folder like the others.
    memorisation: Memorisation = {}  # type: ignore[assignment]
    curate: Curate = {}  # type: ignore[assignment]  # a mapping too: its path is resolved
    # SerializeAsAny: dump each channel's own fields, not just the base class's.
    channels: dict[str, SerializeAsAny[ChannelSettings]] = {"outbox": {}}
    replies: Replies = Replies()
    animation: Animation = Animation()

    # Before pydantic's own str check, which would drop the mark of a URL typed on the command
    # line (whose relative SQLite file is the working directory's).
    @field_validator("database_url", mode="before")
    @classmethod
    def _resolve_sqlite_file(cls, v: Any, info: ValidationInfo) -> Any:
        if not isinstance(v, str):
            return v  # pydantic says what is wrong with it
        try:
            url = make_url(v)
        except ArgumentError:
            raise ValueError(f"'{v}' is not a database URL") from None
        context = info.context or {}
        base = context.get("cwd" if isinstance(v, CommandLineValue) else "base_dir")
        db = url.database
        if (url.get_backend_name() == "sqlite" and db and db != ":memory:"
                and not db.startswith("file:") and not Path(db).is_absolute() and base):
            url = url.set(database=str(base / db))
        return url.render_as_string(hide_password=False)

    @field_validator("channels", mode="before")
    @classmethod
    def _channel_settings(cls, v: Any, info: ValidationInfo) -> dict[str, ChannelSettings]:
        if not isinstance(v, dict):
            raise ValueError("must be a mapping of channel name to its settings")
        out = {}
        for name, raw in v.items():
            if not isinstance(raw, dict | None):
                raise ValueError(f"{name}: must be a mapping of settings (or empty)")
            raw = {"type": name, **(raw or {})}
            model = channel_class(raw["type"]).Settings
            try:
                out[name] = model.model_validate(raw, context=info.context)
            except ValidationError as e:
                raise ValueError(describe_errors(e, model, f"{name}.")) from None
        return out

    @model_validator(mode="after")
    def _replies_channel(self) -> Settings:
        r = self.replies
        ch = self.channels.get(r.channel)
        if r.enabled and (ch is None or not ch.enabled or ch.type != "mastodon"):
            raise ValueError(f"replies.channel: '{r.channel}' is not an enabled Mastodon channel "
                             "in bot.channels (replies answer mentions on Mastodon)")
        return self

    @property
    def db_file(self) -> Path | None:
        """The SQLite file, or None for a server database."""
        url = make_url(self.database_url)
        db = url.database
        if url.get_backend_name() == "sqlite" and db and db != ":memory:":
            return Path(db)
        return None


def _check_file(source: ConfigFile) -> None:
    """A file that would leave the bot on its defaults without a word is a mistake: an empty
    file, a misspelt section name, one without a `bot:` section. The file is shared with the
    trainer, whose sections are known too; an override must be for the bot."""
    if source.path is not None and source.document is None:
        raise ConfigError(f"{source.path}: the file is empty; the bot's settings go under 'bot:'")
    source.check_keys(TOP_LEVEL_KEYS, reads=("bot",), who="the bot")
    if source.path is not None and "bot" not in source.document:
        raise ConfigError(f"{source.path}: no 'bot:' section, so nothing here is for the bot; "
                          "put its settings under 'bot:' (an empty 'bot:' means all defaults)")


def settings_of(source: ConfigFile) -> Settings:
    """The bot's settings: the `bot:` section of a config file with its overrides, every
    path absolute."""
    _check_file(source)
    return source.validate(Settings, "bot", absolute=True)


def load_settings(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Settings:
    """Settings from the `bot:` section of a YAML file (./config.yaml when not given and there:
    all defaults otherwise; a missing named file is an error) and `key=value` overrides,
    rooted at the top of the file like every command's (`bot.schedule.interval_minutes=1`)."""
    path = find_config(Path(path) if path is not None else None)
    return settings_of(read_config(path, overrides))
