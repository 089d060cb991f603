#!/usr/bin/env python3
"""The variants compared on one budget: train (or reuse) one run per variant, evaluate each,
and write the table, a sample grid per variant and the loss curves.

    # the docs/results.md comparison (CPU: about 25-40 min per variant at 1 thread)
    python bench/compare_variants.py --data ../shared/data/animefaces --images 32000 --train \\
        --variants forcecore,dcgan,capsule,capsule-ensemble,hog,mbstd,capsule+mbstd
    # only re-evaluate and redraw from the runs already in runs/compare
    python bench/compare_variants.py --data ../shared/data/animefaces --images 32000

Every run uses the same seed, data, batch and images-seen budget; only the variant differs.
An entry may also be `LABEL=VARIANT;key=value;...`
(e.g. `capsule-bce=capsule;loss.kind=bce`): that variant with those settings, as its own row;
or `LABEL@RUN_FOLDER`: a run trained elsewhere (e.g. a longer run of the same recipe, seed and
batches), measured at its checkpoint of this budget. Every run is measured at the checkpoint
of exactly --images images seen when it has one (a longer run passes through it).
With --seeds 0,1,2 each entry runs once per seed (`cmp-<label>`, `cmp-<label>-s1`, ...) and
its row gives the mean ± std over them. A run is found by its name, `cmp-<label>`, in --runs-dir; with --train a missing run is
trained and an unfinished one resumed. Each run's final checkpoint is evaluated with
`gan.metrics.evaluate` (<ckpt>.metrics.json beside it, reused while the file is unchanged).
Outputs, in --out: `<label>.jpg` (seeds 0-63 of the EMA generator), `overview.jpg` (seeds
0-15 of every variant, labelled), `losses.png` (every run's curves on shared axes), and the
markdown table, printed and written between the `<!-- results:table -->` markers of
--markdown when that file has them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan.checkpoint import load_checkpoint  # noqa: E402
from gan.config import ConfigError, load_config, load_metrics_config  # noqa: E402
from gan.metrics import evaluate, read_metrics, write_metrics  # noqa: E402
from gan.report import read_stats  # noqa: E402
from gan.sampling import generate_array, grid  # noqa: E402
from gan.training import latest_checkpoint, train  # noqa: E402

DEFAULT_VARIANTS = "forcecore,dcgan,capsule,capsule-ensemble,hog,mbstd"
START, END = "<!-- results:table -->", "<!-- /results:table -->"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_entry(entry: str) -> tuple[str, str, list[str]]:
    """`variant` or `label=variant;key=value;...` -> (label, variant, overrides); a
    `label@run_folder` entry -> (label, "@run_folder", [])."""
    if "@" in entry and "=" not in entry.split("@", 1)[0]:
        label, run = entry.split("@", 1)
        return label, "@" + run, []
    if "=" not in entry:
        return entry, entry, []
    label, rest = entry.split("=", 1)
    variant, *overrides = rest.split(";")
    return label, variant, overrides


def find_run(runs_dir: Path, label: str) -> Path | None:
    """The newest run folder named cmp-<label> (run folders are <id>-<name>)."""
    name = f"cmp-{label}"
    runs = sorted(p for p in runs_dir.glob(f"*-{name}")
                  if p.is_dir() and re.fullmatch(rf"\d+-{re.escape(name)}", p.name))
    return runs[-1] if runs else None


def checkpoint_at(run: Path, images: int) -> Path | None:
    """The run's checkpoint at `images` images seen if it kept one, else its newest when that
    is not past the budget (a longer run without that checkpoint cannot be measured at it)."""
    batch = json.loads((run / "config.json").read_text())["train"]["batch_size"]
    exact = run / f"ckpt-{-(-images // batch):06d}.pt"
    if exact.is_file():
        return exact
    newest = latest_checkpoint(run)
    if newest is not None and load_checkpoint(newest).images_seen > images:
        print(f"{run}: kept no checkpoint at {images} images seen", file=sys.stderr)
        return None
    return newest


def seed_label(label: str, seed: int) -> str:
    """The run label of one seed: seed 0 keeps the plain label (cmp-<label>), others get
    -s<seed> (cmp-<label>-s1)."""
    return label if seed == 0 else f"{label}-s{seed}"


def locate_run(entry: str, a: argparse.Namespace, seed: int) -> Path | None:
    label, variant, _ = parse_entry(entry)
    if variant.startswith("@"):
        return Path(variant[1:])
    if a.train:
        return train_variant(entry, a, seed)
    return find_run(a.runs_dir, seed_label(label, seed))


def train_variant(entry: str, a: argparse.Namespace, seed: int) -> Path:
    """Train (or resume) cmp-<label>[-s<seed>] to a.images; returns the run folder."""
    label, variant, extra = parse_entry(entry)
    label = seed_label(label, seed)
    run = find_run(a.runs_dir, label)
    common = [f"train.total_images={a.images}", f"train.runs_dir={a.runs_dir}",
              f"train.threads={a.threads}", f"train.channels_last={str(a.channels_last).lower()}",
              "train.grid_every=50", "train.checkpoint_every=100", "train.progress=true"]
    if run is not None and (ckpt := latest_checkpoint(run)) is not None:
        ck = load_checkpoint(ckpt)
        if ck.images_seen >= a.images:
            return run
        from gan.config import _merge, parse_overrides, resolve
        cfg = resolve(_merge(ck.config, parse_overrides(common)))
        return train(cfg, resume=ckpt)[0]
    cfg = load_config(None, [f"variant={variant}", f"name=cmp-{label}", f"seed={seed}",
                             f"data.path={a.data}", *common, *a.override, *extra])
    return train(cfg)[0]


def run_summary(run: Path, images: int | None = None) -> dict:
    """Throughput and wall time from stats.jsonl (each line covers log_every steps), up to
    `images` images seen when given (a longer run measured at this budget)."""
    rows = [r for r in read_stats(run) if images is None or r["images_seen"] <= images]
    cfg = json.loads((run / "config.json").read_text())
    seconds, prev = 0.0, 0
    for r in rows:
        if r.get("images_per_s"):
            seconds += (r["images_seen"] - prev) / r["images_per_s"]
        prev = r["images_seen"]
    images = rows[-1]["images_seen"] if rows else 0
    return {"rows": rows, "seconds": seconds, "images": images,
            "images_per_s": images / seconds if seconds else float("nan"),
            "threads": cfg["train"].get("threads"), "channels_last": cfg["train"]["channels_last"],
            "batch": cfg["train"]["batch_size"], "seed": cfg["seed"]}


def label_strip(text: str, width: int, height: int = 18) -> np.ndarray:
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(img).text((4, 3), text, fill="black")
    return np.asarray(img)


def plot_losses(results: list[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), sharex=True,
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, r in zip(axes.flat, results):
        stats = r["summary"]["rows"]
        x = [s["images_seen"] / 1000 for s in stats]
        for key, label in (("loss_d", "D"), ("loss_g", "G"), ("loss_aux", "G aux")):
            pts = [(xi, s[key]) for xi, s in zip(x, stats) if key in s]
            if pts:
                ax.plot(*zip(*pts), label=label, linewidth=0.8)
        ax.set_title(r["variant"], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("thousands of images seen")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _fmt(ms: list[dict], key: str, scale: float = 1.0, digits: int = 2) -> str:
    """One metric of a row: the value, or mean ± std (ddof 1) over the row's seeds."""
    if any(key not in m for m in ms):
        return "–"
    v = np.array([m[key] * scale for m in ms])
    return f"{v[0]:.{digits}f}" if len(v) == 1 else f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def table(results: list[dict], hardware: str) -> str:
    """One row per variant; FLD/KID/precision/recall on the evaluation's features
    (docs/metrics.md), FHD beside them; mean ± std over the seeds of a row that has several
    (one seed: KID's ± is its spread over subsets)."""
    feats = {m.get("extractor", "hog") for r in results for m in r["seeds"]}
    main = "FLD" if feats == {"lite2"} else "/".join(sorted(feats))
    lite2 = feats == {"lite2"}  # KID on network features is not scaled like HOG's
    lines = [
        f"| variant | seeds | {main} ↓ | FHD ↓ | KID{'' if lite2 else ' ×10³'} ↓ | precision ↑ "
        "| recall ↑ | NN dist min / p1 | images/s | wall time | hardware |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        ms, s = r["seeds"], r["summary"]
        nn_min = min(m["nn_distance"]["min"] for m in ms)
        nn_p1 = min(m["nn_distance"]["p1"] for m in ms)
        hw = f"{hardware}, {s['threads'] or 'all'} thread(s)"
        first = _fmt(ms, "fld") if "fld" in ms[0] else _fmt(ms, "fid") if "fid" in ms[0] else "–"
        scale = 1.0 if lite2 else 1e3
        kid = (_fmt(ms, "kid_mean", scale, 1) if len(ms) > 1 else
               f"{_fmt(ms, 'kid_mean', scale, 1)} ± {_fmt(ms, 'kid_std', scale, 1)}")
        lines.append(
            f"| {r['variant']} | {len(ms)} | {first} | {_fmt(ms, 'fhd')} | {kid} | "
            f"{_fmt(ms, 'precision', digits=3)} | {_fmt(ms, 'recall', digits=3)} | "
            f"{nn_min:.3f} / {nn_p1:.3f} | {s['images_per_s']:.1f} | {s['seconds'] / 60:.0f} min "
            f"| {hw} |")
    return "\n".join(lines)


def measure(entry: str, a: argparse.Namespace, seed: int, mcfg) -> tuple | None:
    """(run folder, checkpoint at the budget, its metrics) of one entry and seed; None (with a
    line saying why) when there is no finished run."""
    label = seed_label(parse_entry(entry)[0], seed)
    run = locate_run(entry, a, seed)
    ckpt = checkpoint_at(run, a.images) if run else None
    if ckpt is None:
        print(f"{label}: no finished run cmp-{label} in {a.runs_dir} (use --train)",
              file=sys.stderr)
        return None
    ck = load_checkpoint(ckpt)
    if ck.images_seen < a.images:
        print(f"{label}: {ckpt} has only {ck.images_seen} of {a.images} images; skipped "
              "(use --train to finish it)", file=sys.stderr)
        return None
    m = read_metrics(ckpt, warn=False)
    same = m is not None and (m.get("samples"), m.get("extractor"), m.get("resolution")) \
        == (mcfg.samples, mcfg.features, mcfg.resolution if mcfg.features == "lite2" else None)
    if not same:
        m = evaluate(ckpt, a.data, mcfg, cache_dir=a.cache_dir)
        write_metrics(ckpt, m)
    print(f"{label}: FLD {m.get('fld', float('nan')):.2f}, FHD {m['fhd']:.2f}, "
          f"recall {m['recall']:.4f} ({ckpt})", flush=True)
    return run, ck, m


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the faces folder")
    p.add_argument("--images", type=int, default=32000, help="budget in images seen per run")
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help="comma-separated variants, or LABEL=VARIANT;key=value;... entries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", help="several seeds, e.g. 0,1,2: one run per variant and seed "
                   "(cmp-<label>, cmp-<label>-s1, ...), each row their mean ± std; grids and "
                   "curves from the first")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/compare"))
    p.add_argument("--train", action="store_true", help="train missing runs, resume short ones")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per training run")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra config override for new runs (repeatable)")
    p.add_argument("--samples", type=int, help="evaluation samples (default: config.yaml's)")
    p.add_argument("--cache-dir", default=".cache/datasets",
                   help="decoded faces and their features, reused across rows (default: "
                   ".cache/datasets)")
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.add_argument("--markdown", type=Path, default=Path("docs/results.md"))
    a = p.parse_args()

    if not a.data.is_dir():
        p.error(f"--data {a.data}: not a folder of faces")
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    for entry in variants:  # every entry's config checks out before hours of training
        _, variant, extra = parse_entry(entry)
        if variant.startswith("@"):
            if not (Path(variant[1:]) / "config.json").is_file():
                p.error(f"{entry}: {variant[1:]} is not a run folder")
            continue
        try:
            load_config(None, [f"variant={variant}", f"data.path={a.data}", *a.override, *extra])
        except ConfigError as e:
            p.error(f"{entry}: {e}")
    mcfg = load_metrics_config(Path("config.yaml") if Path("config.yaml").is_file() else None,
                               {"samples": a.samples})
    a.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(x) for x in a.seeds.split(",")] if a.seeds else [a.seed]
    results = []
    for entry in variants:
        v = parse_entry(entry)[0]
        per_seed = []
        for seed in seeds if not parse_entry(entry)[1].startswith("@") else seeds[:1]:
            got = measure(entry, a, seed, mcfg)
            if got is None:
                if a.train:  # the training was stopped (Ctrl+C, SIGTERM): so is the comparison
                    return 1
                continue
            per_seed.append(got)
        if not per_seed:
            continue
        run, ck, m = per_seed[0]
        faces = generate_array(ck, list(range(64)))
        grid(faces, cols=8).save(a.out / f"{v}.jpg", quality=92)
        results.append({"variant": v, "metrics": m, "seeds": [x[2] for x in per_seed],
                        "faces": faces[:16], "summary": run_summary(run, a.images)})
    if not results:
        return 1

    strips = []
    for r in results:
        g = np.asarray(grid(r["faces"], cols=16))
        m = r["metrics"]
        fld = f"FLD {m['fld']:.0f}  " if "fld" in m else ""
        strips += [label_strip(f"{r['variant']}  {fld}FHD {m['fhd']:.2f}", g.shape[1]), g]
    from PIL import Image
    Image.fromarray(np.concatenate(strips)).save(a.out / "overview.jpg", quality=92)
    plot_losses(results, a.out / "losses.png")

    hardware = f"{cpu_name()} ({os.cpu_count()} cores), torch {torch.__version__}"
    text = table(results, hardware)
    print(text)
    if a.markdown.is_file():
        doc = a.markdown.read_text()
        if START in doc and END in doc:
            head, rest = doc.split(START, 1)
            doc = head + START + "\n" + text + "\n" + END + rest.split(END, 1)[1]
            a.markdown.write_text(doc)
            print(f"updated the table in {a.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
