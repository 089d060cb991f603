from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_resolve_against_the_config_folder(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "conf" / "config.yaml"
    cfg.parent.mkdir()
    cfg.write_text("train: {batch_size: 8}\nbot:\n  data_dir: d\n")  # the trainer's: fine
    monkeypatch.chdir(tmp_path)  # a different working directory must not matter
    s = load_settings(cfg)
    assert s.data_dir == tmp_path / "conf" / "d"
    assert s.default_checkpoint == tmp_path / "conf" / "checkpoints" / "default.pt"
    assert s.db_file == tmp_path / "conf" / "data" / "bot" / "bot.db"
    assert s.schedule.interval_minutes == 360 and s.schedule.cron is None
    assert s.schedule.misfire_grace_s == 3600
    assert list(s.channels) == ["outbox"]


def test_no_default_file_means_defaults_in_cwd(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings().data_dir == tmp_path / "data" / "bot"


def test_server_database_url_is_kept(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("bot:\n  database_url: postgresql+psycopg://bot@db.example/bot\n")
    s = load_settings(cfg)
    assert s.database_url == "postgresql+psycopg://bot@db.example/bot"
    assert s.db_file is None


def test_overrides_apply_on_top(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "conf" / "c.yaml"
    cfg.parent.mkdir()
    cfg.write_text("bot:\n  schedule: {interval_minutes: 5}\n  data_dir: d\n"
                   "  channels: {outbox: {folder: o}}\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    s = load_settings(cfg, ["bot.schedule.interval_minutes=null",
                            "bot.schedule.cron=0 9 * * mon-fri",
                            "bot.channels.mirror={type: outbox, folder: m}",
                            "bot.database_url=sqlite:///here.db"])
    assert s.schedule.cron == "0 9 * * mon-fri" and s.schedule.interval_minutes is None
    assert s.channels["mirror"].type == "outbox"
    # Written in the file: the file's folder; typed on the command line: the working directory.
    assert s.data_dir == cfg.parent / "d" and s.channels["outbox"].folder == cfg.parent / "o"
    assert s.channels["mirror"].folder == work / "m"
    assert s.db_file == work / "here.db"


@pytest.mark.parametrize("text, expected", [
    ("bot: [unclosed", "invalid YAML at line 1"),
    ("bot:\n  colour: blue\n", "bot.colour: unknown key"),
    ("bot:\n  schedule: {every: 5}\n", "bot.schedule.every: unknown key"),
    ("bot:\n  schedule: {cron: '61 * * * *', interval_minutes: null}\n",
     "bot.schedule.cron: '61 * * * *' is not a valid cron expression"),
    ("bot:\n  schedule: {cron: '0 9 * * 1', interval_minutes: null}\n",
     "write weekdays as names"),
    ("bot:\n  schedule: {cron: '0 9 * * mon'}\n", "set exactly one of cron and interval_minutes"),
    ("bot:\n  schedule: {timezone: Mars/Olympus}\n", "unknown time zone 'Mars/Olympus'"),
    ("bot:\n  caption: 'seed {sed}'\n", "bot.caption: unknown field {sed}"),
    ("bot:\n  channels: {fax: {}}\n", "unknown channel type 'fax'"),
    ("bot:\n  channels: {outbox: {folder: x, colour: red}}\n",
     "bot.channels: outbox.colour: unknown key"),
    ("bot:\n  channels: {outbox: yes}\n", "bot.channels: outbox: must be a mapping"),
    ("- just a list\n", "expected a mapping"),
    ("", "the file is empty"),
    ("# only a comment\n", "the file is empty"),
    ("variant: dcgan\ntrain: {batch_size: 8}\n", "no 'bot:' section"),
    ("bott:\n  data_dir: d\n", "bott: unknown key (did you mean bot?)"),
    ("bot: {}\nschedule: {cron: '0 9 * * mon'}\n", "schedule: unknown key (known: augment,"),
])
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, expected: str):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    message = str(e.value)
    assert expected in message
    assert message.startswith(str(cfg))
    assert "\n" not in message


def test_missing_named_file_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.yaml")


def test_bad_override_is_an_error(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="override 'bot.schedule' is not key=value"):
        load_settings(None, ["bot.schedule"])
    with pytest.raises(ConfigError, match="command line schedule.cron=x: schedule: unknown key"):
        load_settings(None, ["schedule.cron=x"])  # rooted at the top, like the trainer's
    with pytest.raises(ConfigError, match="command line train.batch_size=8: the bot does not "
                       "read the 'train:' settings"):
        load_settings(None, ["train.batch_size=8"])


def _keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= _keys(value, f"{prefix}{key}.")
    return out


def test_config_yaml_lists_every_setting_with_its_default(monkeypatch, tmp_path: Path):
    import yaml

    from bot.config import Settings
    config = REPO / "config.yaml"
    section = (yaml.safe_load(config.read_text()) or {}).get("bot") if config.is_file() else None
    if section is None:
        pytest.skip(f"{config} has no bot: section yet")
    monkeypatch.chdir(tmp_path)
    defaults = Settings.model_validate({}, context={"base_dir": config.parent})
    loaded = load_settings(config)
    # Channels written out disabled are examples to fill in (an instance URL has no default);
    # everything else must be the default.
    examples = {name for name, ch in loaded.channels.items()
                if not ch.enabled and name not in defaults.channels}
    expected = defaults.model_dump()
    for name in examples:  # an example shows its channel's defaults, bar the required keys
        ch = loaded.channels[name]
        required = {key: getattr(ch, key) for key, field in type(ch).model_fields.items()
                    if field.is_required()}
        expected["channels"][name] = type(ch).model_validate(
            {**required, "enabled": False}, context={"base_dir": config.parent}).model_dump()
    assert loaded.model_dump() == expected
    # Every key written out (a channel's `type` may be left to its name).
    documented = {k for k in _keys(loaded.model_dump(mode="json")) if not k.endswith(".type")}
    assert documented - _keys(section) == set()


def test_the_cli_refuses_a_config_that_says_nothing(tmp_path: Path, capsys, restore_logging):
    from bot.cli import main
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("")
    assert main(["--config", str(cfg), "status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {cfg}: the file is empty") and "\n" not in err


def test_an_empty_bot_section_means_the_defaults(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("bot:\n")
    assert load_settings(cfg).data_dir == tmp_path / "data" / "bot"


def test_both_command_lines_speak_one_grammar(write_config, capsys, restore_logging):
    """train.py and `python -m bot` read the same file with the same override grammar, and
    say the same things about the same mistakes."""
    from bot.cli import main as bot
    from gan.cli import main as trainer
    cfg = str(write_config())

    def err(rc: int) -> str:
        assert rc == 2
        return capsys.readouterr().err.splitlines()[-1]

    assert err(trainer(["train", "--config", cfg, "train.batch_sise=8"])) == (
        "error: command line train.batch_sise=8: train.batch_sise: unknown key "
        "(did you mean train.batch_size?)")
    assert err(bot(["--config", cfg, "status", "bot.retry.poll_sx=8"])) == (
        "error: command line bot.retry.poll_sx=8: bot.retry.poll_sx: unknown key "
        "(did you mean bot.retry.poll_s?)")
    # Each refuses the other's settings rather than ignore them.
    assert err(trainer(["train", "--config", cfg, "bot.retry.poll_s=8"])) == (
        "error: command line bot.retry.poll_s=8: the trainer does not read the 'bot:' settings")
    assert err(bot(["--config", cfg, "status", "train.batch_size=8"])) == (
        "error: command line train.batch_size=8: the bot does not read the 'train:' settings")
    assert err(trainer(["evaluate", "x.pt", "--config", cfg, "train.batch_size=8"])) == (
        "error: command line train.batch_size=8: evaluate does not read the 'train:' settings")
    # The same words for a word that is not key=value, and for a misspelt section.
    assert err(trainer(["train", "--config", cfg, "bot.retry"])).endswith(
        "override 'bot.retry' is not key=value (e.g. train.batch_size=32 or "
        "bot.schedule.interval_minutes=60)")
    assert err(bot(["--config", cfg, "status", "bott.retry.poll_s=8"])) == (
        "error: command line bott.retry.poll_s=8: bott: unknown key (did you mean bot?)")
    assert err(trainer(["train", "--config", cfg, "bott.retry.poll_s=8"])) == (
        "error: command line bott.retry.poll_s=8: bott: unknown key (did you mean bot?)")
    # Text that is not YAML is kept as typed by both: here it is the caption.
    assert bot(["--config", cfg, "post", "--dry-run", "bot.caption=[draft] {seed}"]) == 0
    assert "caption:    [draft] " in capsys.readouterr().out


def test_a_bug_keeps_its_traceback_and_a_mistake_is_one_line(write_config, monkeypatch, capsys,
                                                             restore_logging):
    from bot import BotError, cli
    cfg = str(write_config())

    def broken(settings, args):
        raise ValueError("a bug, not a user's")
    monkeypatch.setattr(cli, "cmd_status", broken)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["--config", cfg, "status"])
    assert "error:" not in capsys.readouterr().err

    def mistaken(settings, args):
        raise BotError("no post 99")
    monkeypatch.setattr(cli, "cmd_status", mistaken)
    assert cli.main(["--config", cfg, "status"]) == 2
    assert capsys.readouterr().err == "error: no post 99\n"
