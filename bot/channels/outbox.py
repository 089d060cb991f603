"""The outbox channel: posts land in a local folder with a static gallery, no server needed.

Each post is `post-NNNNNN.<png|gif>` (and `.mp4` for an animated post with a video) plus a
JSON sidecar. After every delivery the pages are rebuilt from all the sidecars, newest first:
`index.html`, `page-2.html`, ... (`per_page` posts each), and the same per checkpoint
(`checkpoint-<name>.html`, `checkpoint-<name>-page-2.html`, ...), linked from a filter bar.
Pages that are no longer needed are removed. File names depend only on the post id, so
delivering the same post again (after a crash) rewrites the same files: no duplicates.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import Field

from bot.channels.base import (Channel, ChannelSettings, Outgoing, Permanent, Receipt,
                               Retryable)
from bot.fields import RelPath
from gan import atomic_write


class OutboxSettings(ChannelSettings):
    folder: RelPath | None = None  # None: <data_dir>/outbox
    title: str = "waifu-gen outbox"
    per_page: int = Field(100, ge=1, le=1000)  # posts per gallery page


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
.post img, .post video {{ width: 192px; height: 192px; image-rendering: pixelated;
                          border-radius: 4px; flex: none; }}
.meta {{ color: #666; font-size: .9rem; }}
.score {{ background: #eef4ea; color: #2d5a1e; border-radius: 4px; padding: 0 .3rem; }}
nav {{ margin: 1rem 0; line-height: 2; }}
nav a, nav strong {{ padding: .15rem .5rem; border-radius: 4px; margin-right: .25rem;
                     text-decoration: none; }}
nav a {{ background: #fff; color: #35c; box-shadow: 0 1px 2px rgba(0,0,0,.1); }}
nav strong {{ background: #35c; color: #fff; }}
</style>
</head>
<body>
<h1>{title}</h1>
<nav class="filter">Checkpoint: {filters}</nav>
<p class="meta">{count}, newest first{page_of}.</p>
{pager}
{entries}
{pager}
</body>
</html>
"""

_ENTRY = """<article class="post" id="{stem}">
{media}
<div>
<p>{caption}</p>
<p class="meta">post {post_id} &middot; {seeds} &middot; {checkpoint} ({variant}, step {step}){score}
&middot; <time datetime="{created_at}">{shown_at}</time></p>
</div>
</article>"""


def _readable(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


def _slug(checkpoint: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", checkpoint).strip("-") or "unnamed"


def _page_name(stem: str, number: int) -> str:
    """index.html, page-2.html, ...; checkpoint-x.html, checkpoint-x-page-2.html, ..."""
    if number == 1:
        return f"{stem}.html"
    return f"page-{number}.html" if stem == "index" else f"{stem}-page-{number}.html"


def _media(p: dict[str, Any]) -> str:
    """The post's picture: an <img> (a GIF plays by itself), or for a video a muted looping
    <video> that starts by itself, inline on phones too."""
    e = html.escape
    alt = e(p.get("alt_text", ""))
    if p.get("video"):
        poster = f' poster="{e(p["image"])}"' if p.get("image") else ""
        return (f'<video src="{e(p["video"])}"{poster} width="64" height="64" autoplay loop '
                f'muted playsinline aria-label="{alt}"></video>')
    return f'<img src="{e(p.get("image", ""))}" alt="{alt}" width="64" height="64">'


def _entry(p: dict[str, Any]) -> str:
    e = html.escape
    seeds = p.get("seeds")
    shown_seeds = (f"seeds {' &rarr; '.join(e(str(k)) for k in seeds)}"
                   if isinstance(seeds, list) and seeds else f"seed {e(str(p.get('seed', '')))}")
    if isinstance(p.get("frames"), int):
        shown_seeds += f", {p['frames']} frames"
    score = p.get("score")
    shown_score = (f' &middot; <span class="score">score {score:.3g}</span>'
                   if isinstance(score, (int, float)) and not isinstance(score, bool) else "")
    return _ENTRY.format(
        stem=e(Path(p.get("image", "")).stem), media=_media(p), caption=e(p.get("caption", "")),
        post_id=e(str(p.get("post_id", ""))), seeds=shown_seeds,
        checkpoint=e(p.get("checkpoint", "")), variant=e(p.get("variant", "")),
        step=e(str(p.get("step", ""))), score=shown_score,
        created_at=e(p.get("created_at", "")), shown_at=e(_readable(p.get("created_at", ""))))


def _pager(stem: str, number: int, pages: int) -> str:
    if pages == 1:
        return ""
    links = [f"<strong>{n}</strong>" if n == number else
             f'<a href="{_page_name(stem, n)}">{n}</a>' for n in range(1, pages + 1)]
    if number > 1:
        links.insert(0, f'<a href="{_page_name(stem, number - 1)}" rel="prev">&larr; newer</a>')
    if number < pages:
        links.append(f'<a href="{_page_name(stem, number + 1)}" rel="next">older &rarr;</a>')
    return f'<nav class="pages">{" ".join(links)}</nav>'


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
        name = f"{stem}{post.image_path.suffix or '.png'}"
        sidecar = {
            "post_id": post.post_id, "created_at": post.created_at.isoformat(),
            "caption": post.caption, "alt_text": post.alt_text, "seed": post.seed,
            "checkpoint": post.checkpoint, "variant": post.variant, "step": post.step,
            "images_seen": post.images_seen, "image": name,
            "image_sha256": hashlib.sha256(image).hexdigest(),
        }
        if post.seeds:  # an animated post
            sidecar.update(kind="animation", seeds=list(post.seeds), frames=post.frames)
        if post.score is not None:  # curated: the gallery shows it
            sidecar["score"] = round(post.score, 4)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self.folder / name, image)
            if post.video_path is not None:
                sidecar["video"] = f"{stem}.mp4"
                atomic_write(self.folder / f"{stem}.mp4", post.video_path.read_bytes())
            atomic_write(self.folder / f"{stem}.json",
                          json.dumps(sidecar, indent=2, ensure_ascii=False).encode())
            self.write_pages()
        except PermissionError as e:
            raise Permanent(f"cannot write to the outbox {self.folder}: {e.strerror}") from None
        except OSError as e:
            # A full disk or a flaky network share may recover; retry later.
            raise Retryable(f"outbox write failed: {e}") from None
        return Receipt(remote_id=stem, url=f"{self.where()}#{stem}")

    def _posts(self) -> list[dict[str, Any]]:
        posts = []
        for path in self.folder.glob("post-*.json"):
            try:
                post = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a stray or damaged file must not take the whole page down
            if isinstance(post, dict):
                posts.append(post)
        posts.sort(key=lambda p: (str(p.get("created_at", "")), p.get("post_id", 0)),
                   reverse=True)
        return posts

    def render_pages(self) -> dict[str, str]:
        """Every gallery page by file name: all posts, then each checkpoint's."""
        posts = self._posts()
        by_checkpoint: dict[str, list[dict[str, Any]]] = {}
        for p in posts:  # newest first: the checkpoint posted from last comes first
            by_checkpoint.setdefault(str(p.get("checkpoint", "")), []).append(p)
        groups = [("index", None, posts)] + [(f"checkpoint-{_slug(name)}", name, items)
                                             for name, items in by_checkpoint.items()]
        e = html.escape
        pages = {}
        for stem, checkpoint, items in groups:
            filters = " ".join(
                f"<strong>{e(label)}</strong>" if other == stem else
                f'<a href="{other}.html">{e(label)}</a>'
                for other, label in [("index", f"all ({len(posts)})")] + [
                    (f"checkpoint-{_slug(name)}", f"{name} ({len(group)})")
                    for name, group in by_checkpoint.items()])
            count = (f"{len(items)} posted" if checkpoint is None else
                     f"{len(items)} posted from {e(checkpoint)}")
            per = self.settings.per_page
            chunks = [items[i:i + per] for i in range(0, len(items), per)] or [[]]
            for number, chunk in enumerate(chunks, 1):
                page_of = f"; page {number} of {len(chunks)}" if len(chunks) > 1 else ""
                pages[_page_name(stem, number)] = _PAGE.format(
                    title=e(self.settings.title), filters=filters, count=count,
                    page_of=page_of, pager=_pager(stem, number, len(chunks)),
                    entries="\n".join(_entry(p) for p in chunk))
        return pages

    def render_index(self) -> str:
        return self.render_pages()["index.html"]

    def write_pages(self) -> None:
        """Write every page and remove the ones no longer needed (fewer posts per checkpoint
        after a deletion, a larger per_page)."""
        pages = self.render_pages()
        for name, text in pages.items():
            atomic_write(self.folder / name, text.encode())
        for old in [*self.folder.glob("page-*.html"), *self.folder.glob("checkpoint-*.html")]:
            if old.name not in pages:
                old.unlink(missing_ok=True)


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--hide-scrollbars")


def chromium() -> str | None:
    """The headless browser used for screenshots of the gallery, if one is installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, out: Path, width: int = 1000, height: int = 1400,
               timeout_s: float = 120) -> None:
    """A picture of a gallery page as a browser draws it (tests, docs/gallery.png), taken by
    headless Chromium with a throw-away profile. RuntimeError when it cannot."""
    browser = chromium()
    if browser is None:
        raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             f"--screenshot={out.resolve()}", f"--window-size={width},{height}",
             # Let a video reach its first frames before the picture is taken.
             "--virtual-time-budget=3000", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"chromium failed (exit status {done.returncode}): "
                           f"{done.stderr.strip()[-500:]}")
