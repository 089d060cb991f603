"""Pictures of a run: the progress GIF and the loss plot."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from gan.files import atomic_write


def progress_gif(run_dir: Path, max_frames: int = 120, ms_per_frame: int = 120) -> Path | None:
    """grids/frame-*.png (4x4 faces from the fixed latents) -> progress.gif."""
    frames = sorted((Path(run_dir) / "grids").glob("frame-*.png"))
    if not frames:
        return None
    if len(frames) > max_frames:
        step = len(frames) / max_frames
        frames = [frames[int(i * step)] for i in range(max_frames - 1)] + [frames[-1]]
    images = [Image.open(p).convert("RGB") for p in frames]
    out = Path(run_dir) / "progress.gif"
    durations = [ms_per_frame] * (len(images) - 1) + [2000]  # linger on the last frame
    images[0].save(out, save_all=True, append_images=images[1:], duration=durations, loop=0,
                   optimize=True)
    return out


def read_stats(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "stats.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return rows


def keep_stats_until(run_dir: Path, step: int) -> None:
    """Before a run resumes from `step`: drop the stats.jsonl lines of later steps (logged by
    the run that crashed or stopped after that checkpoint; they are trained again) and a last
    line cut short, so that the file holds one trajectory and new lines start on a line."""
    path = Path(run_dir) / "stats.jsonl"
    if not path.is_file():
        return
    kept = [r for r in read_stats(run_dir) if r.get("step", 0) <= step]
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept).encode())


def plot_losses(run_dir: Path) -> Path | None:
    rows = read_stats(run_dir)
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["images_seen"] / 1000 for r in rows]
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for key, label in (("loss_d", "D loss"), ("loss_g", "G loss"), ("loss_aux", "G aux loss")):
        pts = [(xi, r[key]) for xi, r in zip(x, rows) if key in r]
        if pts:
            a.plot(*zip(*pts), label=label, linewidth=0.8)
    a.set_ylabel("loss")
    a.legend()
    a.grid(alpha=0.3)
    b.plot(x, [r["d_real"] for r in rows], label="D(x) real", linewidth=0.8)
    b.plot(x, [r["d_fake"] for r in rows], label="D(G(z)) fake", linewidth=0.8)
    b.set_ylabel("D output (probability)")
    b.set_xlabel("thousands of images seen")
    b.set_ylim(0, 1)
    b.legend()
    b.grid(alpha=0.3)
    fig.suptitle(Path(run_dir).name)
    fig.tight_layout()
    out = Path(run_dir) / "losses.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
