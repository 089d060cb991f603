"""One loader for config.yaml (gan/configfile.py): the override grammar, rooted at the top of the
file; every mistake listed with its source (the file or the override) and its key; relative
paths against the config file's folder, typed ones against the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from gan.config import ConfigError, load_config, load_metrics_config
from gan.configfile import Override, find_config, read_config


def test_override_values_are_yaml_and_text_that_is_not_yaml_is_kept():
    assert Override.parse("train.batch_size=8").value == 8
    assert Override.parse("bot.hashtags=[a, b]").value == ["a", "b"]
    assert Override.parse("bot.schedule={cron: 0 9 * * mon}").value == {"cron": "0 9 * * mon"}
    assert Override.parse("data.path=").value is None
    assert Override.parse("bot.caption=[draft] {seed}").value == "[draft] {seed}"
    o = Override.parse("bot.schedule.interval_minutes=1")
    assert o.key == ("bot", "schedule", "interval_minutes")
    assert o.label == "command line bot.schedule.interval_minutes=1"
    # Not YAML means the text, for the trainer's settings as for the bot's.
    assert load_config(None, ["train.device=[cuda"]).train.device == "[cuda"


def test_later_overrides_win_and_merge_into_the_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {batch_size: 16, total_images: 100}\nbot: {data_dir: d}\n")
    source = read_config(cfg, ["train.batch_size=8", "train={batch_size: 4}",
                               "train.batch_size=32"])
    assert source.tree["train"] == {"batch_size": 32, "total_images": 100}
    assert source.tree["bot"] == {"data_dir": "d"}
    with pytest.raises(ConfigError, match="command line seed.x=1: seed is not a section"):
        read_config(tmp_path / "c.yaml", ["seed=1", "seed.x=1"])


def test_every_mistake_is_listed_with_its_file_or_override_and_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  batch_sise: 8\n  log_every: 0\nmodel: {g_width: 2}\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg, ["optim.lr_g=-1", "model.g_width=many"])
    assert str(e.value).split("; ") == [
        "command line model.g_width=many: model.g_width: Input should be a valid integer, "
        "unable to parse string as an integer",
        "command line optim.lr_g=-1: optim.lr_g: Input should be greater than 0",
        f"{cfg}: train.log_every: Input should be greater than or equal to 1",
        f"{cfg}: train.batch_sise: unknown key (did you mean train.batch_size?)"]
    cfg.write_text("metrics: {samples: 1, pr_k: 0}\n")
    with pytest.raises(ConfigError) as e:
        load_metrics_config(cfg, {"kid_subsets": 0})
    assert sorted(str(e.value).split("; ")) == [
        "--kid-subsets: metrics.kid_subsets: Input should be greater than or equal to 1",
        f"{cfg}: metrics.pr_k: Input should be greater than or equal to 1",
        f"{cfg}: metrics.samples: Input should be greater than or equal to 2"]


def test_unknown_sections_and_other_programs_settings_are_mistakes(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("trian: {batch_size: 8}\nbot: {data_dir: d}\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg, ["bot.data_dir=x", "metrics.samples=9", "modle.g_width=8"])
    assert str(e.value).split("; ") == [
        f"{cfg}: trian: unknown key (did you mean train?)",
        "command line modle.g_width=8: modle: unknown key (did you mean model?)",
        "command line bot.data_dir=x: the trainer does not read the 'bot:' settings",
        "command line metrics.samples=9: the trainer does not read the 'metrics:' settings"]


def test_paths_written_in_the_file_are_the_files_folders(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.yaml").write_text(
        "data: {path: faces}\ntrain: {runs_dir: out/runs}\nmetrics: {inception_weights: w.pth}\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # another working directory: the same files
    cfg = load_config(Path("../conf/config.yaml"))
    assert cfg.data.path.resolve() == conf / "faces"
    assert cfg.train.runs_dir.resolve() == conf / "out" / "runs"
    assert cfg.data.cache_dir.resolve() == conf / ".cache" / "datasets"  # a default, too
    assert not cfg.data.path.is_absolute()  # as spelt: run folders must not pin a machine
    assert load_metrics_config(conf / "config.yaml").inception_weights == conf / "w.pth"
    # Typed on the command line: the working directory's, as a user typing a path expects.
    cfg = load_config(conf / "config.yaml", ["data.path=mine", "train.runs_dir=~/runs"])
    assert cfg.data.path == Path("mine") and cfg.train.runs_dir == Path.home() / "runs"
    assert load_metrics_config(conf / "config.yaml", {"inception_weights": Path("w.pth")}
                               ).inception_weights == Path("w.pth")
    # A checkpoint's config (no file) keeps its paths as they are.
    assert load_config(None, ["data.path=faces"]).data.path == Path("faces")


def test_without_a_config_file_train_py_runs_on_the_defaults(tiny, tmp_path, monkeypatch):
    from gan.cli import main
    monkeypatch.chdir(tmp_path)  # no config.yaml here
    assert find_config(None) is None
    assert main([*tiny, "train.total_images=8"]) == 0
    assert list((tmp_path / "runs").glob("*/ckpt-*.pt"))
    with pytest.raises(ConfigError, match="nope.yaml: no such config file"):
        read_config(find_config(Path("nope.yaml")))
