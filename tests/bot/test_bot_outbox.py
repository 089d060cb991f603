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
        "index.html", "post-000001.json", "post-000001.png"]
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
