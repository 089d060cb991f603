"""Bot messages that say what is true: `history -n 0`, how many `retry` posted, a misspelt key
with the nearest known one, a `--set` mistake blamed on the --set (not on config.yaml), and the
gallery page in the daemon's first log line."""

from __future__ import annotations

from bot.cli import main
from helpers import daemon


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_history_n_0_is_not_no_posts_yet(write_config, capsys, restore_logging):
    cfg = str(write_config())
    assert _run(capsys, "--config", cfg, "post")[0] == 0
    rc, out, err = _run(capsys, "--config", cfg, "history", "-n", "0")
    assert rc == 2 and "no posts yet" not in out
    assert err.splitlines()[-1] == "error: history -n 0: show at least one post (-n 1 or more)"


def test_retry_says_how_many_were_posted(write_config, tmp_path, capsys, restore_logging):
    blocker = tmp_path / "mirror"
    blocker.write_text("a file where the mirror's folder should be")
    cfg = str(write_config(retry={"max_attempts": 1, "base_delay_s": 0},
                           channels={"outbox": {}, "mirror": {"type": "outbox",
                                                              "folder": "mirror"}}))
    rc, out, _ = _run(capsys, "--config", cfg, "post")
    assert rc == 1 and "post 1 → mirror: failed" in out
    rc, out, _ = _run(capsys, "--config", cfg, "retry")  # still blocked
    assert rc == 1 and out.startswith("1 failed deliveries tried again: 0 posted, 1 not")
    blocker.unlink()
    rc, out, _ = _run(capsys, "--config", cfg, "retry")
    assert rc == 0 and out.startswith("1 failed deliveries tried again: 1 posted, 0 not")
    rc, out, _ = _run(capsys, "--config", cfg, "retry")
    assert rc == 0 and out == "no failed deliveries to try again\n"


def test_a_set_mistake_is_blamed_on_the_set(write_config, capsys, restore_logging):
    cfg = str(write_config())
    rc, _, err = _run(capsys, "--config", cfg, "--set", "schedule.interval_minuts=5", "status")
    assert rc == 2 and err.splitlines()[-1] == (
        "error: --set schedule.interval_minuts=5: bot.schedule.interval_minuts: unknown key "
        "(did you mean bot.schedule.interval_minutes?)")
    rc, _, err = _run(capsys, "--config", cfg, "--set", "channels.outbox.foldr=x", "status")
    assert err.splitlines()[-1].endswith("outbox.foldr: unknown key (did you mean "
                                         "outbox.folder?)")
    assert "--set channels.outbox.foldr=x: " in err


def test_a_file_mistake_is_still_the_file(write_config, capsys, restore_logging):
    cfg = write_config(dedupe={"max_distance": 3})
    rc, _, err = _run(capsys, "--config", str(cfg), "--set", "retry.poll_s=5", "status")
    assert rc == 2 and err.splitlines()[-1] == (
        f"error: {cfg}: bot.dedupe: unknown key (did you mean bot.dedup?)")


def test_the_gallery_is_the_first_log_line(write_config, tmp_path):
    write_config()
    with daemon(tmp_path, tmp_path / "daemon.log") as d:
        d.wait_for(f"daemon {d.process.pid} started")
    lines = d.text().splitlines()
    gallery = (tmp_path / "data" / "outbox" / "index.html").as_uri()
    assert lines[0].endswith(f"INFO posts go to outbox: {gallery}"), lines[:3]
    assert "database schema upgraded" in "\n".join(lines[1:])  # a first start: it came after
