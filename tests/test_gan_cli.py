"""The command line: user mistakes are one line on stderr, never a traceback; the commands do
their job; training also runs as 2 processes under torchrun (gloo on the CPU)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.checkpoint import load_checkpoint
from gan.config import load_config
from gan.data import FaceDataset
from gan.testing import make_tiny_checkpoint
from gan.training import DistInfo, Trainer
from tests.conftest import REPO

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def run(*args: str, cwd: Path = REPO, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(p: subprocess.CompletedProcess, pattern: str) -> None:
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("error: ") and pattern in lines[0], lines[0]


@pytest.mark.parametrize("args,pattern", [
    (["trian.batch_size=4"], "command line trian.batch_size=4: trian: unknown key"),
    (["train.batch_sise=4"], "train.batch_sise: unknown key"),
    (["train.batch_size=many"], "train.batch_size: Input should be a valid integer"),
    (["variant=gigagan"], "unknown variant part 'gigagan'"),
    (["variant=capsule+minibatch-disc"], "not available for capsule discriminators"),
    (["justaword"], "is not key=value"),
    ([], "data.path is not set"),
    (["data.path=/nonexistent/faces"], "image folder not found: /nonexistent/faces"),
    (["model.mbstd_group=3"], "must be a multiple of model.mbstd_group"),
])
def test_training_mistakes(args, pattern, tmp_path):
    assert_one_line_error(run("--config", str(REPO / "config.yaml"),
                              f"train.runs_dir={tmp_path}", *args), pattern)
    assert not any(tmp_path.iterdir())  # no empty run folder left behind


def test_bad_yaml_is_one_line(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("train: [unclosed\n")
    assert_one_line_error(run("--config", str(bad)), "invalid YAML")


@pytest.mark.parametrize("args,pattern", [
    (["sample", "missing.pt"], "checkpoint not found: missing.pt"),
    (["sample", "CK", "--seeds", "9-3"], "--seeds '9-3'"),
    (["sample", "CK", "--seeds", "a,b"], "--seeds 'a,b'"),
    (["export", "missing.pt", "--out", "x.pt"], "checkpoint not found"),
    (["resume", "RUNS"], "no ckpt-*.pt checkpoint"),
    (["clean", "/nonexistent/dir"], "image folder not found"),
])
def test_command_mistakes(args, pattern, tmp_path):
    ck = make_tiny_checkpoint(tmp_path / "t.pt")
    args = [str(ck) if a == "CK" else str(tmp_path) if a == "RUNS" else a for a in args]
    assert_one_line_error(run(*args, cwd=tmp_path), pattern)



@pytest.mark.parametrize("bug", [RuntimeError("a bug"), ValueError("a bug, not a user's")])
def test_a_bug_keeps_its_traceback(bug, monkeypatch, capsys):
    """Only a UserError becomes one line; any other exception (a plain ValueError included)
    leaves main() with its traceback."""
    from gan import cli

    def broken(a):
        raise bug
    monkeypatch.setattr(cli, "_cmd_clean", broken)
    with pytest.raises(type(bug), match="a bug"):
        cli.main(["clean", "anywhere"])
    assert "error:" not in capsys.readouterr().err


def test_a_user_mistake_in_process_is_one_line_with_status_2(monkeypatch, capsys):
    from gan import cli
    from gan.data import DataError

    def mistaken(a):
        raise DataError("image folder not found: x")
    monkeypatch.setattr(cli, "_cmd_clean", mistaken)
    assert cli.main(["clean", "x"]) == 2
    assert capsys.readouterr().err == "error: image folder not found: x\n"

def test_sample_export_interpolate(tmp_path):
    ck = make_tiny_checkpoint(tmp_path / "t.pt")
    p = run("sample", str(ck), "--seeds", "0-15", "--out", str(tmp_path / "g.png"))
    assert p.returncode == 0, p.stderr
    with Image.open(tmp_path / "g.png") as im:
        assert im.size == (2 * (4 * 66 + 2),) * 2  # 4x4 faces, 2 px gaps, scale 2
    p = run("sample", str(ck), "--seeds", "3,7", "--separate", "--out", str(tmp_path / "one"))
    assert p.returncode == 0, p.stderr
    from gan.sampling import generate_array
    assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / "seed00007.png")),
                          generate_array(ck, [7])[0])
    p = run("interpolate", str(ck), "1", "2", "--frames", "6", "--out", str(tmp_path / "w.gif"))
    assert p.returncode == 0, p.stderr
    with Image.open(tmp_path / "w.gif") as gif:
        assert gif.n_frames == 10  # there and back
    p = run("export", str(ck), "--out", str(tmp_path / "e.pt"))
    assert p.returncode == 0 and load_checkpoint(tmp_path / "e.pt").kind == "export"


def test_train_then_resume_from_cli(tiny, tmp_path):
    p = run("--config", str(REPO / "config.yaml"), *tiny, "train.total_images=16")
    assert p.returncode == 0, p.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    p = run("resume", str(run_dir), "train.total_images=32")
    assert p.returncode == 0, p.stderr
    assert load_checkpoint(sorted(run_dir.glob("ckpt-*.pt"))[-1]).step == 4
    assert_one_line_error(run("resume", str(run_dir), "model.g_width=16"),
                          "resume may only change train.*")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks_in_one_process(cfg, data, steps: int):
    """The 2-process run computed in this process: ranks 0 and 1 of 2 (each its own Trainer,
    its half of each global batch), stepped side by side in two threads; wherever the ranks
    average their gradients, this averages them itself (gan.training's all-reduce is not
    used), so the result is what correct data parallelism must give. Returns rank 0's
    trainer."""
    trainers = [Trainer(cfg, data, None) for _ in range(2)]  # the same initial weights
    barrier = threading.Barrier(2)
    grads: list[list[torch.Tensor]] = [[], []]

    def averaged(rank: int):
        def sync(model: torch.nn.Module) -> None:
            grads[rank] = [p.grad for p in model.parameters() if p.grad is not None]
            barrier.wait()
            mean = [(a + b) / 2 for a, b in zip(*grads)]
            barrier.wait()  # both have read both before either writes
            for g, m in zip(grads[rank], mean):
                g.copy_(m)
        return sync

    for rank, t in enumerate(trainers):
        t.dist, t.local_batch = DistInfo(rank, 2), cfg.train.batch_size // 2
        t._sync_grads = averaged(rank)
    errors: list[BaseException] = []

    def run(t) -> None:
        try:
            for _ in range(steps):
                t.train_step()
        except BaseException as e:  # noqa: BLE001  (re-raised below, in the test's thread)
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(t,)) for t in trainers]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return trainers[0]


@pytest.mark.slow
def test_two_process_torchrun_gloo_trains_like_one_process(tiny, faces_dir, tmp_path):
    """torchrun with 2 gloo processes gives the weights of the same global batches split over
    2 ranks with their gradients averaged: this fails if the all-reduce is left out."""
    # G trains from the first step (forcecore's D warm-up would leave its all-reduce unused).
    settings = [*tiny, "train.total_images=32", "train.device=cpu", "optim.d_warmup_steps=0"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           str(REPO / "train.py"), *settings]
    p = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1  # only rank 0 makes the run folder
    ck = load_checkpoint(sorted(runs[0].glob("ckpt-*.pt"))[-1])
    assert (ck.step, ck.images_seen) == (4, 32)  # global batch 8 = 2 processes x 4

    cfg = load_config(None, settings)
    ref = _two_ranks_in_one_process(cfg, FaceDataset.load(faces_dir, None, progress=False), 4)
    for key, model in (("G", ref.G), ("D", ref.D), ("G_ema", ref.G_ema)):
        expected = model.state_dict()
        assert ck.state[key].keys() == expected.keys()
        for name, value in ck.state[key].items():
            assert torch.allclose(value, expected[name], rtol=0, atol=1e-6), f"{key}.{name}"