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


def test_overrides_apply_on_top(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("bot:\n  schedule: {interval_minutes: 5}\n")
    s = load_settings(cfg, ["schedule.interval_minutes=null", "schedule.cron=0 9 * * mon-fri",
                            "channels.mirror={type: outbox, folder: m}"])
    assert s.schedule.cron == "0 9 * * mon-fri" and s.schedule.interval_minutes is None
    assert s.channels["mirror"].type == "outbox"
    assert s.channels["mirror"].folder == tmp_path / "m"


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
    ("bott:\n  data_dir: d\n", "unknown top-level key 'bott'"),
    ("bot: {}\nschedule: {cron: '0 9 * * mon'}\n", "unknown top-level key 'schedule'"),
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
    with pytest.raises(ConfigError, match="must look like"):
        load_settings(None, ["schedule"])


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
