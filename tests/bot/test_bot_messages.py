"""Bot messages that say what is true: `history -n 0`, how many `retry` posted, a misspelt key
with the nearest known one, an override's mistake blamed on the override (not on config.yaml),
`--set` as a deprecated alias that says so, and the gallery page in the daemon's first log
line."""

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


def test_an_override_mistake_is_blamed_on_the_override(write_config, capsys, restore_logging):
    cfg = str(write_config())
    rc, _, err = _run(capsys, "--config", cfg, "status", "bot.schedule.interval_minuts=5")
    assert rc == 2 and err == (
        "error: command line bot.schedule.interval_minuts=5: bot.schedule.interval_minuts: "
        "unknown key (did you mean bot.schedule.interval_minutes?)\n")
    rc, _, err = _run(capsys, "--config", cfg, "status", "bot.channels.outbox.foldr=x")
    assert err == ("error: command line bot.channels.outbox.foldr=x: bot.channels: outbox.foldr: "
                   "unknown key (did you mean outbox.folder?)\n")


def test_every_mistake_is_listed_with_its_file_or_override(write_config, capsys,
                                                           restore_logging):
    cfg = write_config(dedupe={"max_distance": 3}, retry={"poll_s": 0})
    rc, _, err = _run(capsys, "--config", str(cfg), "status", "bot.image.scale=99",
                      "bot.retry.base_delay_s=-1")
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert sorted(err.removeprefix("error: ").strip().split("; ")) == sorted([
        f"{cfg}: bot.retry.poll_s: Input should be greater than 0",
        "command line bot.retry.base_delay_s=-1: bot.retry.base_delay_s: Input should be "
        "greater than or equal to 0",
        "command line bot.image.scale=99: bot.image.scale: Input should be less than or equal "
        "to 16",
        f"{cfg}: bot.dedupe: unknown key (did you mean bot.dedup?)"])


def test_set_is_a_deprecated_alias_of_bot_keys(write_config, capsys, restore_logging):
    cfg = str(write_config())
    rc, out, err = _run(capsys, "--config", cfg, "--set", "schedule.interval_minutes=5",
                        "--set", "schedule.post_at_start=false", "status")
    assert rc == 0 and "daemon: not running" in out
    assert err.splitlines()[0] == (
        "warning: --set is deprecated: write bot.schedule.interval_minutes=5 after the command "
        "(overrides start at the top of config.yaml, as train.py's do)")
    assert err.count("deprecated") == 1  # once, however many --set
    rc, _, err = _run(capsys, "--config", cfg, "--set", "schedule.interval_minuts=5", "status")
    assert rc == 2 and err.splitlines()[-1] == (
        "error: --set schedule.interval_minuts=5: bot.schedule.interval_minuts: unknown key "
        "(did you mean bot.schedule.interval_minutes?)")


def test_the_gallery_is_the_first_log_line(write_config, tmp_path):
    write_config()
    with daemon(tmp_path, tmp_path / "daemon.log") as d:
        d.wait_for(f"daemon {d.process.pid} started")
    lines = d.text().splitlines()
    gallery = (tmp_path / "data" / "outbox" / "index.html").as_uri()
    assert lines[0].endswith(f"INFO posts go to outbox: {gallery}"), lines[:3]
    assert "database schema upgraded" in "\n".join(lines[1:])  # a first start: it came after
