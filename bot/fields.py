"""Setting types that the bot's settings and each channel's settings share: paths, caption
templates (and the fields they may use), hashtags, and references to secrets.

Below both `bot.config` (which builds each configured channel's settings) and the channels
(whose settings use these types), so neither has to import the other.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr, model_validator

from bot.secret import read_secret
from gan import RelPath

__all__ = ["RelPath", "template_fields", "TEMPLATE_FIELDS", "Template", "Hashtag", "SecretRef"]


def template_fields(post_number: int, seed: int, checkpoint: str, variant: str, step: int,
                    images_seen: int, quality: str,
                    score: float | None = None) -> dict[str, Any]:
    """What caption and alt-text templates may use. {score}: a curated post's realism score
    ("1.07"), empty for an uncurated one."""
    return {"post_number": post_number, "seed": seed, "checkpoint": checkpoint,
            "variant": variant, "step": step, "images_seen": images_seen,
            "kimg": round(images_seen / 1000), "quality": quality,
            "score": "" if score is None else f"{score:.2f}"}

# The fields caption and alt-text templates may use, with sample values to check templates.
TEMPLATE_FIELDS: dict[str, Any] = template_fields(
    post_number=1, seed=0, checkpoint="default.pt", variant="dcgan", step=0, images_seen=0,
    quality="FLD 1450", score=1.07)


def _check_template(text: str) -> str:
    try:
        text.format(**TEMPLATE_FIELDS)
    except KeyError as e:
        raise ValueError(f"unknown field {{{e.args[0]}}} "
                         f"(known: {', '.join(TEMPLATE_FIELDS)})") from None
    except (ValueError, IndexError) as e:
        raise ValueError(f"not a valid template: {e}") from None
    return text


Template = Annotated[str, AfterValidator(_check_template)]


def _hashtag(tag: str) -> str:
    tag = tag if tag.startswith("#") else f"#{tag}"  # "#..." needs quotes in YAML: both work
    if not re.fullmatch(r"#\w*[^\W\d]\w*", tag):  # Mastodon's and X's rule
        raise ValueError(f"'{tag}' is not a hashtag: letters, digits and _, not only digits")
    return tag


Hashtag = Annotated[str, AfterValidator(_hashtag)]


class SecretRef(BaseModel):
    """Where a secret is: an environment variable, or a file (which wins when both are set).
    The value itself never appears in the config."""

    model_config = ConfigDict(extra="forbid")

    env: str | None = None
    file: RelPath | None = None

    @model_validator(mode="after")
    def _somewhere(self) -> SecretRef:
        if not self.env and self.file is None:
            raise ValueError("name an environment variable (env:) or a file (file:)")
        return self

    def describe(self) -> str:
        return f"the file {self.file}" if self.file is not None else f"${self.env}"

    def read(self, what: str) -> SecretStr:
        return read_secret(what, env=self.env, file=self.file)
