"""What channels get is the stored 64x64 image enlarged (bot.image.scale, default 8: 512x512,
nearest-neighbour; lanczos as an option); the stored image, its hash and `regenerate` stay on
the original, and each delivery records the size it delivered."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image

from bot import posting, store
from bot.config import ConfigError, load_settings
from helpers import Seeds, bot_parts, delivery, is_enlarged

X_IMAGE_LIMIT = 5 * 1024 * 1024  # X's limit for an uploaded image; Mastodon's is 16 MB


def _posted(write_config, **image):
    settings, sessions, channels = bot_parts(load_settings(write_config(image=image)))
    post_id = posting.post_once(sessions, settings, channels, rng=Seeds(3))
    with sessions() as s:
        post = store.post(s, post_id)
    return settings, sessions, post


def test_delivered_512_stored_64(write_config):
    settings, sessions, post = _posted(write_config)
    original = settings.data_dir / post.image_path
    assert Image.open(original).size == (64, 64)
    assert hashlib.sha256(original.read_bytes()).hexdigest() == post.image_sha256
    delivered = (settings.data_dir / "outbox" / "post-000001.png").read_bytes()
    assert is_enlarged(delivered, original, 8)  # crisp: every 8x8 block one pixel
    assert delivery(sessions, post.id, "outbox").image_size == "512x512"
    page = (settings.data_dir / "outbox" / "index.html").read_text()
    assert 'src="post-000001.png"' in page  # the gallery shows the enlarged file
    out, same = posting.regenerate(sessions, settings, post.id)
    assert same and Image.open(out).size == (64, 64)


def test_lanczos_and_scale_one(write_config, tmp_path):
    settings, sessions, post = _posted(write_config, scale=4, resample="lanczos")
    original = settings.data_dir / post.image_path
    delivered = (settings.data_dir / "outbox" / "post-000001.png").read_bytes()
    assert delivery(sessions, post.id, "outbox").image_size == "256x256"
    assert not is_enlarged(delivered, original, 4)  # smoothed, not blocks

    (tmp_path / "data").rename(tmp_path / "old")
    settings, sessions, post = _posted(write_config, scale=1)
    assert (settings.data_dir / "outbox" / "post-000001.png").read_bytes() == \
        (settings.data_dir / post.image_path).read_bytes()
    assert delivery(sessions, post.id, "outbox").image_size == "64x64"


def test_the_largest_setting_stays_within_the_servers_limits(write_config):
    settings, _, post = _posted(write_config, scale=16, resample="lanczos")
    path = posting.delivered_image(settings, post)
    assert Image.open(path).size == (1024, 1024)
    assert path.stat().st_size < X_IMAGE_LIMIT


@pytest.mark.parametrize("image, expected", [
    ({"scale": 0}, "bot.image.scale: Input should be greater than or equal to 1"),
    ({"scale": 17}, "bot.image.scale: Input should be less than or equal to 16"),
    ({"resample": "bicubic"}, "bot.image.resample: Input should be 'nearest' or 'lanczos'"),
])
def test_bad_image_settings(write_config, image, expected):
    with pytest.raises(ConfigError, match=expected):
        load_settings(write_config(image=image))
