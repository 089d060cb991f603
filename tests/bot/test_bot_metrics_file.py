"""Metrics belong to one checkpoint file: evaluating another checkpoint of the same folder
leaves the first one's numbers alone, and publishing it again still records them."""

from __future__ import annotations

import json
from pathlib import Path

from bot.checkpoints import publish
from bot.config import load_settings
from bot.db import open_database
from gan.cli import main as train_main
from gan.files import file_sha256
from gan.metrics import read_metrics
from gan.testing import make_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _evaluate(ck: Path, faces: Path, config: Path) -> None:
    assert train_main(["evaluate", str(ck), "--data", str(faces), "--samples", "16",
                       "--config", str(config), "--cache-dir", "none"]) == 0


def test_evaluating_a_neighbour_keeps_the_metrics_of_default(faces_dir, write_config, tmp_path):
    folder = tmp_path / "checkpoints"
    default = make_tiny_checkpoint(folder / "default.pt", seed=1)
    other = make_tiny_checkpoint(folder / "other.pt", seed=2)
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")

    _evaluate(default, faces_dir, empty)
    own = folder / "default.metrics.json"
    before = json.loads(own.read_text())
    assert before["checkpoint"]["sha256"] == file_sha256(default)
    _evaluate(other, faces_dir, empty)

    assert json.loads(own.read_text()) == before
    assert read_metrics(other)["checkpoint"]["sha256"] == file_sha256(other)
    assert not (folder / "metrics.json").exists()

    settings = load_settings(write_config())
    sessions = open_database(settings.database_url)
    assert publish(sessions, other).metrics["checkpoint"]["file"] == "other.pt"
    again = publish(sessions, default)  # published again after the neighbour was measured
    assert again.metrics == before and again.metrics["fhd"] > 0


def test_the_shipped_checkpoint_has_its_own_metrics_file():
    shipped = REPO / "checkpoints" / "default.pt"
    metrics = read_metrics(shipped)
    assert metrics is not None and metrics["checkpoint"]["file"] == "default.pt"
    assert (REPO / "checkpoints" / "default.metrics.json").is_file()
    assert not (REPO / "checkpoints" / "metrics.json").exists()
