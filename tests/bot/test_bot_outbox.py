from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image

from bot.channels.base import Outgoing, Permanent
from bot.channels.outbox import OutboxChannel, OutboxSettings

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def outbox(tmp_path: Path) -> OutboxChannel:
    return OutboxChannel("outbox", OutboxSettings(type="outbox"), tmp_path / "data")


def _post(tmp_path: Path, post_id: int, caption: str = "a face", minutes: int = 0) -> Outgoing:
    image = tmp_path / f"img{post_id}.png"
    Image.new("RGB", (64, 64), (post_id * 40 % 256, 0, 0)).save(image)
    return Outgoing(post_id=post_id, idempotency_key=f"k{post_id}", image_path=image,
                    caption=caption, alt_text=f"alt {post_id}", seed=1000 + post_id,
                    checkpoint="default.pt", variant="dcgan", step=5, images_seen=320,
                    created_at=T0 + timedelta(minutes=minutes))


def test_delivering_twice_leaves_one_entry(outbox: OutboxChannel, tmp_path: Path):
    post = _post(tmp_path, 1)
    first = outbox.deliver(post)
    second = outbox.deliver(post)
    assert first == second and first.remote_id == "post-000001"
    folder = tmp_path / "data" / "outbox"
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint-default.pt.html", "index.html", "post-000001.json", "post-000001.png"]
    assert (folder / "index.html").read_text().count('class="post"') == 1
    assert first.url == (folder / "index.html").as_uri() + "#post-000001"


def test_gallery_is_newest_first_and_escaped(outbox: OutboxChannel, tmp_path: Path):
    outbox.deliver(_post(tmp_path, 1, minutes=0))
    outbox.deliver(_post(tmp_path, 3, minutes=10))
    outbox.deliver(_post(tmp_path, 2, caption='<script>alert("x")</script> & co', minutes=5))
    page = (tmp_path / "data" / "outbox" / "index.html").read_text()
    order = [page.index(f'id="post-00000{i}"') for i in (3, 2, 1)]
    assert order == sorted(order)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page
    assert 'alt="alt 2"' in page and "seed 1002" in page and "default.pt" in page
    assert "3 posted" in page
    assert f'<time datetime="{T0.isoformat()}">2026-11-26 12:00 UTC</time>' in page


def test_sidecar_describes_the_post(outbox: OutboxChannel, tmp_path: Path):
    outbox.deliver(_post(tmp_path, 7))
    sidecar = json.loads((tmp_path / "data" / "outbox" / "post-000007.json").read_text())
    assert sidecar["seed"] == 1007 and sidecar["caption"] == "a face"
    assert sidecar["created_at"] == T0.isoformat() and sidecar["image"] == "post-000007.png"


def test_a_damaged_sidecar_does_not_break_the_page(outbox: OutboxChannel, tmp_path: Path):
    folder = tmp_path / "data" / "outbox"
    folder.mkdir(parents=True)
    (folder / "post-000099.json").write_text("{not json")
    outbox.deliver(_post(tmp_path, 1))
    assert "1 posted" in (folder / "index.html").read_text()


def test_missing_image_is_a_permanent_error(outbox: OutboxChannel, tmp_path: Path):
    post = _post(tmp_path, 1)
    post.image_path.unlink()
    with pytest.raises(Permanent, match="regenerate 1"):
        outbox.deliver(post)


def test_folder_setting_overrides_the_default(tmp_path: Path):
    ch = OutboxChannel("o", OutboxSettings(type="outbox", folder=tmp_path / "elsewhere"),
                       tmp_path / "data")
    ch.deliver(_post(tmp_path, 1))
    assert (tmp_path / "elsewhere" / "post-000001.png").is_file()


# ---- the gallery as a place to look (issue 14, part 6)

def _gallery(tmp_path: Path, per_page: int = 100) -> OutboxChannel:
    return OutboxChannel("outbox", OutboxSettings(type="outbox", per_page=per_page),
                         tmp_path / "data")


def _page_ids(folder: Path, name: str) -> list[int]:
    import re
    return [int(i) for i in re.findall(r'<article class="post" id="post-(\d+)"',
                                       (folder / name).read_text())]


def test_pages_past_per_page_newest_first_and_stale_pages_removed(tmp_path: Path):
    outbox = _gallery(tmp_path, per_page=2)
    for i in range(1, 6):
        outbox.deliver(_post(tmp_path, i, minutes=i))
    folder = outbox.folder
    assert [_page_ids(folder, n) for n in ("index.html", "page-2.html", "page-3.html")] == [
        [5, 4], [3, 2], [1]]
    page2 = (folder / "page-2.html").read_text()
    assert '<a href="index.html" rel="prev">&larr; newer</a>' in page2
    assert '<a href="page-3.html" rel="next">older &rarr;</a>' in page2
    assert "5 posted, newest first; page 2 of 3." in page2

    _gallery(tmp_path, per_page=4).write_pages()  # fewer pages now: the old third one goes
    assert sorted(p.name for p in folder.glob("*.html")) == [
        "checkpoint-default.pt-page-2.html", "checkpoint-default.pt.html", "index.html",
        "page-2.html"]
    assert _page_ids(folder, "page-2.html") == [1]


def test_a_page_per_checkpoint_linked_from_every_page(tmp_path: Path):
    from dataclasses import replace
    outbox = _gallery(tmp_path)
    for i in range(1, 5):
        post = _post(tmp_path, i, minutes=i)
        outbox.deliver(replace(post, checkpoint="mine 2.pt") if i % 2 else post)
    folder = outbox.folder
    assert _page_ids(folder, "checkpoint-default.pt.html") == [4, 2]
    assert _page_ids(folder, "checkpoint-mine-2.pt.html") == [3, 1]
    for name in ("index.html", "checkpoint-default.pt.html"):
        page = (folder / name).read_text()
        assert '<a href="checkpoint-mine-2.pt.html">mine 2.pt (2)</a>' in page
    page = (folder / "checkpoint-default.pt.html").read_text()
    assert "<strong>default.pt (2)</strong>" in page and '<a href="index.html">all (4)</a>' in page
    assert "2 posted from default.pt, newest first." in page


def test_animated_posts_play_inline_and_a_score_shows_when_known(tmp_path: Path):
    from dataclasses import replace
    outbox = _gallery(tmp_path)
    gif = tmp_path / "walk.gif"
    frames = [Image.new("RGB", (64, 64), (c, 0, 0)) for c in (0, 120, 240)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], loop=0, duration=100)
    outbox.deliver(replace(_post(tmp_path, 1), image_path=gif))
    folder = outbox.folder
    assert (folder / "post-000001.gif").read_bytes() == gif.read_bytes()
    assert '<img src="post-000001.gif" alt="alt 1"' in (folder / "index.html").read_text()

    # A video (an animated post's MP4) and a curation score, as sidecars may carry them.
    sidecar = json.loads((folder / "post-000001.json").read_text())
    sidecar.update(video="post-000001.mp4", score=0.8312, seeds=[4, 9, 4], frames=48)
    (folder / "post-000001.json").write_text(json.dumps(sidecar))
    outbox.write_pages()
    page = (folder / "index.html").read_text()
    assert ('<video src="post-000001.mp4" poster="post-000001.gif" width="64" height="64" '
            'autoplay loop muted playsinline aria-label="alt 1"></video>') in page
    assert '<span class="score">score 0.831</span>' in page
    assert "seeds 4 &rarr; 9 &rarr; 4, 48 frames" in page
    assert "score" not in _post_page_without_score(tmp_path)


def _post_page_without_score(tmp_path: Path) -> str:
    other = OutboxChannel("o", OutboxSettings(type="outbox", folder=tmp_path / "plain"),
                          tmp_path / "data")
    other.deliver(_post(tmp_path, 2))
    return (tmp_path / "plain" / "index.html").read_text().split("<body>")[1]


@pytest.mark.slow
def test_the_gallery_in_a_real_browser(tmp_path: Path):
    """A screenshot by headless Chromium: the page loads from disk without a server, and the
    faces are drawn (their colours are in the picture)."""
    from bot.channels.outbox import chromium, screenshot
    if chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    import numpy as np
    outbox = _gallery(tmp_path)
    colours = {1: (250, 30, 30), 2: (30, 200, 30), 3: (40, 40, 240)}
    for i, colour in colours.items():
        post = _post(tmp_path, i, minutes=i)
        Image.new("RGB", (512, 512), colour).save(post.image_path)
        outbox.deliver(post)
    shot = tmp_path / "gallery.png"
    screenshot(outbox.folder / "index.html", shot, width=800, height=900)
    with Image.open(shot) as im:
        assert im.size == (800, 900)
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    for colour in colours.values():  # each face shows as a block of its colour
        assert (np.abs(pixels.astype(int) - colour).sum(axis=1) < 12).sum() > 150 * 150


def test_past_200_posts_at_the_default_page_size(tmp_path: Path):
    outbox = _gallery(tmp_path)  # per_page 100
    outbox.deliver(_post(tmp_path, 1))
    folder = outbox.folder
    sidecar = json.loads((folder / "post-000001.json").read_text())
    for i in range(2, 206):  # 205 posts in all, as later deliveries leave them
        at = (T0 + timedelta(minutes=i)).isoformat()
        (folder / f"post-{i:06d}.json").write_text(json.dumps(
            {**sidecar, "post_id": i, "created_at": at, "image": f"post-{i:06d}.png"}))
    outbox.write_pages()
    pages = [_page_ids(folder, n) for n in ("index.html", "page-2.html", "page-3.html")]
    assert [len(p) for p in pages] == [100, 100, 5]
    assert [i for p in pages for i in p] == list(range(205, 0, -1))
    assert not (folder / "page-4.html").exists()
