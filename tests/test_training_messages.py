"""What training tells its user: a run folder named after its variant, no empty folder from a
run that could not start, the length up front, and how to go on after a stop or at the end."""

from __future__ import annotations

import logging

import pytest

from gan.config import load_config
from gan.errors import UserError
from gan.training import Trainer, train


def _runs(tiny) -> list:
    root = next(o.split("=", 1)[1] for o in tiny if o.startswith("train.runs_dir="))
    from pathlib import Path
    return sorted(Path(root).glob("*")) if Path(root).exists() else []


def test_run_folder_is_named_after_the_variant_unless_named(tiny):
    run_dir, _ = train(load_config(None, tiny + ["variant=dcgan+mbstd", "train.total_images=8"]))
    assert run_dir.name.endswith("-dcgan+mbstd")
    named, _ = train(load_config(None, tiny + ["name=mine", "train.total_images=8"]))
    assert named.name.endswith("-mine")


@pytest.mark.parametrize("over, message", [
    (["train.batch_size=32"], "fewer than train.batch_size"),  # 24 faces
    (["train.device=cuda:7"], "no CUDA device"),
])
def test_a_run_that_cannot_start_leaves_no_folder(tiny, over, message, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(UserError, match=message):  # the CLI's one line, not a traceback
        train(load_config(None, tiny + over))
    assert _runs(tiny) == []


def test_start_says_device_data_and_length(tiny, caplog):
    with caplog.at_level(logging.INFO, logger="gan.training"):
        train(load_config(None, tiny + ["train.total_images=16"]))
    start = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("training"))
    assert "cpu (" in start and "threads" in start and "24 faces" in start
    assert "16 images = 2 steps of 8" in start and "forcecore" in start


def test_a_stop_says_where_it_stopped_and_how_to_resume(tiny, caplog, monkeypatch):
    step = Trainer.train_step

    def step_then_stop(self):
        out = step(self)
        self.request_stop()  # what SIGINT (Ctrl+C) does
        return out
    monkeypatch.setattr(Trainer, "train_step", step_then_stop)
    with caplog.at_level(logging.INFO, logger="gan.training"):
        run_dir, last = train(load_config(None, tiny))
    msg = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("stopped"))
    assert "stopped at step 1 (8 images seen)" in msg and str(last) in msg
    assert f"python train.py resume {run_dir}" in msg


def test_resuming_a_finished_run_says_how_to_extend_it(tiny):
    run_dir, last = train(load_config(None, tiny + ["train.total_images=16"]))
    with pytest.raises(UserError, match=r"is finished \(16 of train.total_images=16 images "
                                         r"seen\).*train.total_images=32"):
        train(load_config(None, tiny + ["train.total_images=16"]), resume=last)
