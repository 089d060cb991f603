"""Config resolution: defaults, variant presets, YAML, overrides; mistakes are readable."""

from __future__ import annotations

import pytest

from gan.config import ConfigError, load_config
from tests.conftest import REPO


def test_shipped_config_resolves_to_forcecore():
    cfg = load_config(REPO / "config.yaml")
    assert (cfg.model.generator, cfg.model.latent, cfg.loss.kind) == ("forcecore", "binary",
                                                                      "soft-bce")
    assert (cfg.optim.lr_d, cfg.optim.lr_g, cfg.optim.d_warmup_steps) == (2e-4, 1e-4, 20)
    assert cfg.model.mbstd_group == 0 and cfg.data.path is None


def test_variant_presets_compose_and_explicit_values_win():
    cfg = load_config(REPO / "config.yaml", ["variant=dcgan+mbstd", "optim.lr_g=5e-5"])
    assert (cfg.model.generator, cfg.model.latent, cfg.loss.kind) == ("dcgan", "gaussian", "bce")
    assert cfg.model.mbstd_group == 4 and cfg.optim.lr_g == 5e-5 and cfg.optim.lr_d == 2e-4


def test_override_values_are_typed():
    cfg = load_config(None, ["train.bf16=true", "train.total_images=1000", "data.path=x/y",
                             "--seed=3"])
    assert cfg.train.bf16 is True and cfg.train.total_images == 1000 and cfg.seed == 3
    assert str(cfg.data.path) == "x/y"


@pytest.mark.parametrize("override,message", [
    ("model.colour=red", "command line model.colour=red: model.colour: unknown key"),
    ("optim.lr_g=-1", "command line optim.lr_g=-1: optim.lr_g: Input should be greater than 0"),
    ("train.device", "is not key=value"),
    ("loss.kind=wasserstein", "loss.kind: Input should be 'soft-bce', 'bce'"),
    ("seed.x=1", "command line seed.x=1: seed: Input should be a valid integer"),
])
def test_mistakes(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bot_section_does_not_disturb_training_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("variant: dcgan\nbot:\n  anything: here\n")
    assert load_config(path).model.generator == "dcgan"


def test_an_unknown_key_in_the_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("variant: dcgan\ntrain:\n  batch_sise: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == (f"{path}: train.batch_sise: unknown key "
                            "(did you mean train.batch_size?)")
    path.write_text("variant: dcgan\n")
    with pytest.raises(ConfigError) as e:  # an override's mistake is not the file's
        load_config(path, ["model.colour=red"])
    assert str(e.value) == "command line model.colour=red: model.colour: unknown key"
