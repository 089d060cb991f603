"""A real preview: `post --dry-run` shows the seed it would use and the next post is that very
image; `post --seed N` posts exactly N and refuses a seed posted before."""

from __future__ import annotations

import hashlib
import logging
import re

from bot import posting, store
from bot.cli import main
from bot.config import load_settings
from helpers import Seeds, bot_parts


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _seed_and_image(out: str) -> tuple[int, bytes]:
    seed = int(re.search(r"^seed: +(\d+)$", out, re.M).group(1))
    image = re.search(r"^image: +(\S+)$", out, re.M).group(1)
    return seed, open(image, "rb").read()


def test_the_post_after_a_dry_run_is_the_image_shown(write_config, capsys, restore_logging):
    cfg = str(write_config())
    rc, out, _ = _run(capsys, "--config", cfg, "post", "--dry-run")
    assert rc == 0 and "the next post is this image" in out
    _, out, _ = _run(capsys, "--config", cfg, "post", "--dry-run")  # another look: another seed
    seed, png = _seed_and_image(out)

    rc, out, _ = _run(capsys, "--config", cfg, "post")
    assert rc == 0 and "post 1 → outbox: posted" in out
    settings = load_settings(cfg)
    sessions = bot_parts(settings)[1]
    with sessions() as s:
        post = store.post(s, 1)
        assert post.seed == seed and post.image_sha256 == hashlib.sha256(png).hexdigest()
    # Used once: the post after it draws afresh.
    assert not (settings.data_dir / posting.NEXT_SEED).exists()
    rc, _, _ = _run(capsys, "--config", cfg, "post")
    with sessions() as s:
        assert rc == 0 and store.post(s, 2).seed != seed


def test_post_seed_posts_exactly_that_seed_once(write_config, capsys, restore_logging):
    cfg = str(write_config())
    rc, out, _ = _run(capsys, "--config", cfg, "post", "--seed", "77")
    assert rc == 0 and "post 1 → outbox: posted" in out
    rc, out, err = _run(capsys, "--config", cfg, "history")
    assert "77" in out.splitlines()[1]
    rc, out, err = _run(capsys, "--config", cfg, "post", "--seed", "77")
    assert rc == 2 and out == ""
    assert err.splitlines()[-1] == ("error: seed 77 was already posted with checkpoint #1 "
                                    "(tiny.pt): a seed is never posted twice")
    rc, out, _ = _run(capsys, "--config", cfg, "post", "--dry-run", "--seed", "78")
    assert rc == 0 and re.search(r"^seed: +78$", out, re.M)


def test_a_kept_seed_posted_meanwhile_gives_way(write_config, caplog):
    settings, sessions, channels = bot_parts(load_settings(write_config()))
    preview = posting.dry_run(sessions, settings, list(channels), rng=Seeds(5))
    posting.post_once(sessions, settings, channels, seed=preview.seed)  # e.g. `post --seed 5`
    with caplog.at_level(logging.WARNING, logger="bot.posting"):
        post_id = posting.post_once(sessions, settings, channels, rng=Seeds(6))
    with sessions() as s:
        assert store.post(s, post_id).seed == 6
    assert "the seed the last dry run showed is not used: seed 5 was already posted" \
        in caplog.text


def test_a_bad_seed_is_a_usage_error(write_config, capsys, restore_logging):
    import pytest
    with pytest.raises(SystemExit) as e:
        main(["--config", str(write_config()), "post", "--seed", "-3"])
    assert e.value.code == 2 and "'-3' is not a seed" in capsys.readouterr().err
