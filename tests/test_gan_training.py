"""The one training loop: runs describe themselves, resume continues the same trajectory, and a
NaN stops the run while keeping the last good checkpoint. (Every variant trains through it:
tests/test_variants.py.)"""

from __future__ import annotations

import json

import pytest
import torch

from gan.checkpoint import load_checkpoint
from gan.config import load_config
from gan.losses import Objective
from gan.training import TrainingDiverged, train


def test_run_folder_describes_itself(tiny):
    cfg = load_config(None, tiny + ["train.keep_checkpoints=1", "name=described"])
    run_dir, last = train(cfg)
    assert run_dir.name.endswith("-described")
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved == cfg.to_plain() and saved["model"]["generator"] == "forcecore"
    assert [p.name for p in run_dir.glob("ckpt-*.pt")] == ["ckpt-000004.pt"]  # rotation
    assert sorted(p.name for p in (run_dir / "grids").glob("grid-*.png")) == [
        "grid-000000.png", "grid-000002.png", "grid-000004.png"]
    from PIL import Image
    with Image.open(run_dir / "progress.gif") as gif:
        assert gif.n_frames == 3
    assert (run_dir / "losses.png").stat().st_size > 1000
    # A second run never reuses the folder.
    run2, _ = train(cfg)
    assert run2 != run_dir and run2.parent == run_dir.parent


def test_resume_continues_the_same_trajectory(tiny):
    straight_dir, straight = train(load_config(None, tiny + ["train.total_images=48",
                                                             "train.checkpoint_every=3"]))
    half_dir, half = train(load_config(None, tiny + ["train.total_images=24",
                                                     "train.checkpoint_every=3"]))
    assert load_checkpoint(half).step == 3
    ck = load_checkpoint(half)
    cfg = load_config(None, tiny + ["train.total_images=48", "train.checkpoint_every=3"])
    assert ck.cfg.model == cfg.model
    _, resumed = train(ck.cfg.model_copy(update={"train": cfg.train}), resume=half)
    a, b = load_checkpoint(straight).state, load_checkpoint(resumed).state
    assert b["step"] == 6
    for part in ("G", "G_ema", "D"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    # The resumed run appended to the same stats file.
    steps = [json.loads(x)["step"] for x in (half_dir / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_drops_the_stats_a_crash_left_after_the_checkpoint(tiny):
    # A run killed between checkpoints has logged steps it must train again: resuming from
    # step 3 replaces their lines, so the loss plot shows one trajectory, not two.
    run_dir, half = train(load_config(None, tiny + ["train.total_images=24",
                                                    "train.checkpoint_every=3"]))
    stats = run_dir / "stats.jsonl"
    lost = [dict(json.loads(stats.read_text().splitlines()[-1]), step=s, images_seen=8 * s)
            for s in (4, 5)]
    with stats.open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in lost)
        f.write('{"step": 6, "ima')  # and a line cut short by the kill
    ck = load_checkpoint(half)
    cfg = load_config(None, tiny + ["train.total_images=48", "train.checkpoint_every=3"])
    train(ck.cfg.model_copy(update={"train": cfg.train}), resume=half)
    steps = [json.loads(x)["step"] for x in stats.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny, monkeypatch):
    calls = {"n": 0}
    real_d_loss = Objective.d_loss

    def poisoned(self, *a, **k):
        calls["n"] += 1
        loss = real_d_loss(self, *a, **k)
        return loss * float("nan") if calls["n"] >= 3 else loss

    monkeypatch.setattr(Objective, "d_loss", poisoned)
    cfg = load_config(None, tiny)
    with pytest.raises(TrainingDiverged, match=r"loss_d became nan by step 3.*ckpt-000002\.pt"):
        train(cfg)
    run_dir = next((cfg.train.runs_dir).iterdir())
    assert [p.name for p in run_dir.glob("ckpt-*.pt")] == ["ckpt-000002.pt"]
    good = load_checkpoint(run_dir / "ckpt-000002.pt").state["G"]
    assert all(torch.isfinite(v).all() for v in good.values() if v.is_floating_point())


def test_ema_follows_generator_with_stated_half_life(tiny):
    from gan.training import EMA
    ema_model, model = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    ema_model.weight.data.fill_(0.0)
    model.weight.data.fill_(1.0)
    EMA(half_life=64, rampup=None).update(ema_model, model, batch=64, images_seen=64)
    assert ema_model.weight.item() == pytest.approx(0.5)  # one half-life: half way
    EMA(half_life=0, rampup=None).update(ema_model, model, batch=64, images_seen=128)
    assert ema_model.weight.item() == 1.0


def test_too_small_dataset_is_a_clear_error(tiny):
    cfg = load_config(None, tiny + ["train.batch_size=64"])
    with pytest.raises(ValueError, match="fewer than train.batch_size 64"):
        train(cfg)
