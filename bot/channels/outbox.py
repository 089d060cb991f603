"""The outbox channel: posts land in a local folder with a static gallery page.

Each post is `post-NNNNNN.png` plus a JSON sidecar; `index.html` is rebuilt from all sidecars
after every delivery, so the page is always whole, newest first. File names depend only on the
post id, so delivering the same post again (after a crash) rewrites the same files: no
duplicates.
"""

from __future__ import annotations

import hashlib
import html
import json
from datetime import datetime, timezone
from pathlib import Path

from bot.channels.base import (Channel, ChannelSettings, Outgoing, Permanent, Receipt,
                               Retryable)
from bot.config import RelPath
from gan.files import atomic_write


class OutboxSettings(ChannelSettings):
    folder: RelPath | None = None  # None: <data_dir>/outbox
    title: str = "waifu-gen outbox"


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem;
       background: #faf7f5; color: #222; }}
.post {{ display: flex; gap: 1.25rem; align-items: flex-start; background: #fff;
         border-radius: 8px; padding: 1rem; margin-bottom: 1rem;
         box-shadow: 0 1px 3px rgba(0,0,0,.12); }}
.post img {{ width: 192px; height: 192px; image-rendering: pixelated; border-radius: 4px; }}
.meta {{ color: #666; font-size: .9rem; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="meta">{count} posted, newest first.</p>
{entries}
</body>
</html>
"""

_ENTRY = """<article class="post" id="{stem}">
<img src="{image}" alt="{alt}" width="64" height="64">
<div>
<p>{caption}</p>
<p class="meta">post {post_id} &middot; seed {seed} &middot; {checkpoint} ({variant}, step {step})
&middot; <time datetime="{created_at}">{shown_at}</time></p>
</div>
</article>"""


def _readable(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


class OutboxChannel(Channel):
    Settings = OutboxSettings
    settings: OutboxSettings

    @property
    def folder(self) -> Path:
        return self.settings.folder or self.data_dir / "outbox"

    def where(self) -> str:
        return (self.folder / "index.html").resolve().as_uri()

    def check(self) -> str:
        return f"writes to {self.folder} (gallery: {self.where()})"

    def deliver(self, post: Outgoing) -> Receipt:
        stem = f"post-{post.post_id:06d}"
        image = post.png()
        sidecar = {
            "post_id": post.post_id, "created_at": post.created_at.isoformat(),
            "caption": post.caption, "alt_text": post.alt_text, "seed": post.seed,
            "checkpoint": post.checkpoint, "variant": post.variant, "step": post.step,
            "images_seen": post.images_seen, "image": f"{stem}.png",
            "image_sha256": hashlib.sha256(image).hexdigest(),
        }
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self.folder / f"{stem}.png", image)
            atomic_write(self.folder / f"{stem}.json",
                          json.dumps(sidecar, indent=2, ensure_ascii=False).encode())
            atomic_write(self.folder / "index.html", self.render_index().encode())
        except PermissionError as e:
            raise Permanent(f"cannot write to the outbox {self.folder}: {e.strerror}") from None
        except OSError as e:
            # A full disk or a flaky network share may recover; retry later.
            raise Retryable(f"outbox write failed: {e}") from None
        return Receipt(remote_id=stem, url=f"{self.where()}#{stem}")

    def render_index(self) -> str:
        posts = []
        for path in self.folder.glob("post-*.json"):
            try:
                posts.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # a stray or damaged file must not take the whole page down
        posts.sort(key=lambda p: (p.get("created_at", ""), p.get("post_id", 0)), reverse=True)
        e = html.escape
        entries = "\n".join(_ENTRY.format(
            stem=e(Path(p.get("image", "")).stem), image=e(p.get("image", "")),
            alt=e(p.get("alt_text", "")), caption=e(p.get("caption", "")),
            post_id=e(str(p.get("post_id", ""))), seed=e(str(p.get("seed", ""))),
            checkpoint=e(p.get("checkpoint", "")), variant=e(p.get("variant", "")),
            step=e(str(p.get("step", ""))), created_at=e(p.get("created_at", "")),
            shown_at=e(_readable(p.get("created_at", ""))))
            for p in posts)
        return _PAGE.format(title=e(self.settings.title), count=len(posts), entries=entries)
