"""Every variant: how presets compose, a few steps through the one training loop, the checkpoint
round trip (sample, export, resume), and clear errors for what cannot work.

Each variant trains once per module (the `trained` cache) and the tests share the run.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from gan.checkpoint import CheckpointError, export_checkpoint, load_checkpoint
from gan.config import PRESETS, Config, ConfigError, load_config
from gan.losses import Objective
from gan.models import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator
from gan.models.capsule import CapsuleDiscriminator, CapsuleEnsemble
from gan.models.hog import HOGGenerator, HOGPairDiscriminator
from gan.sampling import generate_array, image_of, interpolate
from gan.training import Trainer, train
from tests.conftest import REPO, TINY, synthetic_face

BASES = ["forcecore", "dcgan", "capsule", "capsule-ensemble"]
VARIANTS = (BASES + [f"{b}+{m}" for m in ("mbstd", "hog") for b in BASES]
            + ["capsule+hog+mbstd", "forcecore+minibatch-disc", "dcgan+mbstd+minibatch-disc"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """variant -> (config, run folder, last checkpoint) of a 2-step run, trained on first use."""
    root = tmp_path_factory.mktemp("variants")
    faces = root / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(synthetic_face(rng)).save(faces / f"face{i:03d}.png")
    runs: dict[str, tuple[Config, Path, Path]] = {}

    def get(variant: str) -> tuple[Config, Path, Path]:
        if variant not in runs:
            # Step 1 trains D alone (the warm-up), step 2 both; grids at steps 0 and 2.
            cfg = load_config(None, TINY + [
                f"variant={variant}", f"data.path={faces}", f"train.runs_dir={root / 'runs'}",
                "train.total_images=16", "train.log_every=1", "train.grid_every=100",
                "train.checkpoint_every=100", "optim.d_warmup_steps=1"])
            runs[variant] = (cfg, *train(cfg))
        return runs[variant]

    # The GIF and loss plot are the same for every variant (tests/test_gan_training.py covers
    # them) and take most of a tiny run's time.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "finish_outputs", lambda self: None)
        yield get


# --- presets ---------------------------------------------------------------------------------

# variant -> generator, discriminator, hog, loss.kind, mbstd_group, d_options
RESOLVED = {
    "forcecore": ("forcecore", "forcecore", False, "soft-bce", 0, {}),
    "capsule": ("forcecore", "capsule", False, "margin", 0, {}),
    "capsule-ensemble": ("forcecore", "capsule-ensemble", False, "margin", 0, {"k": 3}),
    "capsule-ensemble+mbstd": ("forcecore", "capsule-ensemble", False, "margin", 4, {"k": 3}),
    "hog": ("forcecore", "forcecore", True, "soft-bce", 0, {}),
    "dcgan+hog": ("dcgan", "dcgan", True, "bce", 0, {}),
    "capsule+hog+mbstd": ("forcecore", "capsule", True, "margin", 4, {}),
    "mbstd+hog+capsule": ("forcecore", "capsule", True, "margin", 4, {}),  # order is free
}


@pytest.mark.parametrize("variant", RESOLVED)
def test_presets_compose(variant):
    G, D, hog, kind, mbstd, d_options = RESOLVED[variant]
    m = (cfg := load_config(REPO / "config.yaml", [f"variant={variant}"])).model
    assert (m.generator, m.discriminator, m.hog, cfg.loss.kind) == (G, D, hog, kind)
    assert (m.mbstd_group, m.d_options) == (mbstd, d_options)
    assert cfg.loss.hog_weight == (1.0 if hog else 0.0)
    if G == "forcecore":  # forcecore's optimiser and latent, capsule variants included
        assert (cfg.optim.lr_g, cfg.optim.lr_d, m.latent) == (1e-4, 2e-4, "binary")


def test_a_variant_of_modifiers_only_starts_from_forcecore():
    for mods in ("hog", "mbstd", "hog+mbstd"):
        a = load_config(None, [f"variant={mods}"])
        b = load_config(None, [f"variant=forcecore+{mods}"])
        assert a.model_copy(update={"variant": b.variant}) == b


def test_capsule_options_and_hog_weight_reach_the_models():
    cfg = load_config(None, TINY + ["variant=capsule-ensemble+hog", "model.d_options.k=2",
                                    "model.d_options.routing_iters=1",
                                    "model.d_options.primary_maps=4", "loss.hog_weight=0.5"])
    D, G = build_discriminator(cfg), build_generator(cfg)
    assert isinstance(D, HOGPairDiscriminator) and isinstance(D.base, CapsuleEnsemble)
    assert len(D.base.members) == 2
    caps = D.base.members[0]
    assert (caps.routing_iters, caps.primary_maps, caps.trunk[0].in_channels) == (1, 4, 3 + 9)
    assert isinstance(G, HOGGenerator) and G.consistency_weight == 0.5
    assert type(build_discriminator(load_config(None, ["variant=capsule"]))) is \
        CapsuleDiscriminator


@pytest.mark.parametrize("overrides, message", [
    (["variant=capsule+minibatch-disc"], "not available for capsule discriminators"),
    (["variant=capsule-ensemble+minibatch-disc"], "not available for capsule discriminators"),
    (["variant=capsule+hog+minibatch-disc"], "not available for capsule discriminators"),
    (["variant=capsule+dcgan"], "names 2 base models"),
    (["variant=capsule-ensemble", "model.d_options.k=0"], "needs k >= 1"),
    (["variant=capsule", "model.d_options.routing=3"], "unexpected keyword argument 'routing'"),
    (["model.discriminator=capsules"], "unknown model.discriminator 'capsules'"),
])
def test_impossible_combinations_fail_when_the_config_resolves(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_config_yaml_lists_every_setting_and_choice():
    text = (REPO / "config.yaml").read_text()
    tree = yaml.safe_load(text)
    for section, model in Config.model_fields.items():
        sub = getattr(model.annotation, "model_fields", None)
        assert section in tree, section
        for key in sub or ():
            assert key in tree[section], f"config.yaml lacks {section}.{key}"
    words = {*PRESETS, *GENERATORS, *DISCRIMINATORS, "soft-bce", "bce", "hinge", "margin"}
    missing = [w for w in sorted(words) if w not in text]
    assert not missing, f"config.yaml's comments do not mention {missing}"


# --- objectives on ensemble outputs ------------------------------------------------------------

def test_objectives_average_over_every_element_of_a_k_by_b_output():
    lengths = torch.rand(3, 8) * 0.98 + 0.01  # K x B, an ensemble's output
    for kind in ("margin", "bce", "hinge"):
        obj = Objective(kind)
        per_member = torch.stack([obj.d_loss(r, r.flip(0), "prob") for r in lengths]).mean()
        torch.testing.assert_close(obj.d_loss(lengths, lengths.flip(1), "prob"), per_member)
    # BCE on the capsule length (loss.kind=bce): a probability, no sigmoid.
    torch.testing.assert_close(Objective("bce").g_loss(lengths, "prob"),
                               F.binary_cross_entropy(lengths, torch.ones(3, 8)))


def test_soft_labels_are_drawn_per_element():
    logits = torch.zeros(3, 8)
    loss = Objective("soft-bce").g_loss(logits, "logit", torch.Generator().manual_seed(1))
    labels = 1 - torch.rand(3, 8, generator=torch.Generator().manual_seed(1)) * 0.1
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, labels))


# --- every variant through the one loop --------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_trains_a_few_steps(variant, trained):
    cfg, run_dir, last = trained(variant)
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[-1]["images_seen"] == 16
    assert all(math.isfinite(r["loss_d"]) and 0 <= r["d_real"] <= 1 for r in rows)
    assert "loss_g" not in rows[0] and math.isfinite(rows[1]["loss_g"])  # D-only warm-up
    assert ("loss_aux" in rows[1]) == cfg.model.hog  # the HOG consistency loss
    assert sorted(p.name for p in (run_dir / "grids").glob("grid-*.png")) == [
        "grid-000000.png", "grid-000002.png"]
    ck = load_checkpoint(last)
    assert (ck.variant, ck.step, ck.kind, ck.cfg) == (variant, 2, "training", cfg)
    # G really learned something: its weights moved away from the initial ones.
    torch.manual_seed(cfg.seed)
    init = build_generator(cfg).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in ck.state["G"].items()
               if v.is_floating_point())


@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_round_trip(variant, trained, tmp_path):
    cfg, run_dir, last = trained(variant)
    ck = load_checkpoint(last)
    G = ck.generator()
    assert all(torch.equal(G.state_dict()[k], v) for k, v in ck.state["G_ema"].items())
    z = torch.randn(4, cfg.model.latent_dim)
    assert torch.equal(image_of(G(z)), image_of(load_checkpoint(last).generator()(z)))
    faces = generate_array(last, range(4))
    assert faces.shape == (4, 64, 64, 3) and faces.dtype == np.uint8
    exported = export_checkpoint(ck, tmp_path / "exp.pt", fp16=False)
    assert np.array_equal(generate_array(exported, range(4)), faces)
    assert load_checkpoint(exported).variant == variant
    assert len(interpolate(exported, 0, 1, frames=3)) == 3


@pytest.mark.parametrize("variant", ["capsule-ensemble+mbstd", "capsule+hog+mbstd"])
def test_resume_rebuilds_the_variant(variant, trained, tmp_path):
    cfg, _, last = trained(variant)
    copy = tmp_path / last.name  # resume writes beside its checkpoint: keep the shared run as is
    shutil.copy(last, copy)
    more = cfg.model_copy(update={"train": cfg.train.model_copy(update={"total_images": 24})})
    _, resumed = train(more, resume=copy)
    ck = load_checkpoint(resumed)
    assert (ck.step, ck.variant) == (3, variant)


# --- a checkpoint and a variant that do not match ------------------------------------------------

def _edit_config(src: Path, dst: Path, **model) -> Path:
    """A copy of checkpoint `src` whose config says another variant (a hand edit)."""
    raw = torch.load(src, weights_only=True)
    raw["config"]["variant"] = "forcecore"
    raw["config"]["loss"]["kind"] = "soft-bce"
    raw["config"]["model"].update(model)
    torch.save(raw, dst)
    return dst


def test_capsule_checkpoint_edited_to_forcecore_is_a_clear_error(trained, tmp_path):
    _, _, last = trained("capsule")
    p = _edit_config(last, tmp_path / "edited.pt", discriminator="forcecore")
    ck = load_checkpoint(p)
    ck.generator()  # the capsule variant's G is forcecore's: it fits
    with pytest.raises(CheckpointError, match=r"edited.pt: its weights do not fit variant "
                                              r"'forcecore' \(D: "):
        train(ck.cfg, resume=p)


def test_hog_generator_weights_as_a_plain_generator_are_a_clear_error(trained, tmp_path):
    _, _, last = trained("forcecore+hog")
    p = _edit_config(last, tmp_path / "plain.pt", hog=False)
    # The plain G lacks the head, and its keys are not under `generator.`: both are named.
    with pytest.raises(CheckpointError, match=r"plain.pt: its weights do not fit variant "
                       r"'forcecore' \(G_ema: Missing key.*; Unexpected key.*\"generator\."):
        generate_array(p, [0])
