"""`python train.py ...`: train, resume, clean, sample, interpolate, export, evaluate, index,
critic.

    python train.py data.path=../shared/data/animefaces variant=forcecore
    python train.py resume runs/00003-forcecore train.total_images=600000
    python train.py clean ../shared/data/animefaces --move-to rejected/
    python train.py sample checkpoints/default.pt --seeds 0-63 --out grid.png
    python train.py interpolate checkpoints/default.pt 1 2 --out walk.gif
    python train.py export runs/00003-forcecore/ckpt-004000.pt --out checkpoints/mine.pt
    python train.py evaluate checkpoints/default.pt --data ../shared/data/animefaces metrics.samples=1000
    python train.py index ../shared/data/animefaces --out data/faces-index.npz
    python train.py critic ../shared/data/animefaces --out checkpoints/critic.npz
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gan.configfile import find_config, merge, parse_command_line, read_config
from gan.errors import UserError

# Each command imports what it needs when it runs (torch among it): `--help` answers at once.
COMMANDS = ("train", "resume", "clean", "sample", "interpolate", "export", "evaluate", "index",
            "critic")


class UsageError(UserError, ValueError):
    """A bad command line (not caught by argparse itself)."""


CONFIG_HELP = ("settings file (default: ./config.yaml when it is there, else the defaults); "
               "relative paths in it are relative to its folder")
OVERRIDES_HELP = ("settings from the top of config.yaml, e.g. variant=dcgan train.batch_size=32 "
                  "(a relative path typed here is relative to the working directory)")


def parse_seeds(text: str) -> list[int]:
    """'0-15' or '1,5,9' or '3' -> seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            a, sep, b = part.strip().partition("-")
            lo, hi = int(a), int(b) if sep else int(a)
            if hi < lo:
                raise ValueError
            seeds.extend(range(lo, hi + 1))
    except ValueError:
        raise UsageError(f"--seeds '{text}': use a range like 0-15 or a list like 1,5,9") from None
    if not seeds or min(seeds) < 0:
        raise UsageError(f"--seeds '{text}': seeds are whole numbers >= 0")
    return seeds


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a new run (the default command)")
    t.set_defaults(func=_cmd_train)
    t.add_argument("--config", type=Path, help=CONFIG_HELP)
    t.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)

    r = sub.add_parser("resume", help="continue a run from its newest checkpoint")
    r.set_defaults(func=_cmd_resume)
    r.add_argument("run", type=Path, help="a run folder or one of its ckpt-*.pt files")
    r.add_argument("overrides", nargs="*", metavar="key=value",
                   help="only train.* settings may change, e.g. train.total_images=600000")

    c = sub.add_parser("clean", help="report (and move aside) images not worth training on")
    c.set_defaults(func=_cmd_clean)
    c.add_argument("folder", type=Path)
    c.add_argument("--move-to", type=Path, help="move flagged files here, one folder per reason")
    c.add_argument("--min-size", type=int, default=32)
    c.add_argument("--near-dup-bits", type=int, default=4,
                   help="pHash distance counted as a near-duplicate (default 4 of 64)")

    s = sub.add_parser("sample", help="faces from a checkpoint: a grid or one PNG per seed")
    s.set_defaults(func=_cmd_sample)
    s.add_argument("checkpoint", type=Path)
    s.add_argument("--seeds", default="0-63", help="e.g. 0-15 or 1,5,9 (default 0-63)")
    s.add_argument("--out", type=Path, default=Path("out/grid.png"),
                   help="grid PNG, or a folder with --separate")
    s.add_argument("--separate", action="store_true", help="one PNG per seed into --out")
    s.add_argument("--scale", type=int, default=2, help="enlarge the grid (nearest), default 2")

    i = sub.add_parser("interpolate", help="a GIF walking between two seeds' faces")
    i.set_defaults(func=_cmd_interpolate)
    i.add_argument("checkpoint", type=Path)
    i.add_argument("seed_a", type=int)
    i.add_argument("seed_b", type=int)
    i.add_argument("--frames", type=int, default=32)
    i.add_argument("--out", type=Path, default=Path("out/interpolation.gif"))

    e = sub.add_parser("export", help="write the small inference-only file the bot publishes")
    e.set_defaults(func=_cmd_export)
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--fp32", action="store_true", help="keep float32 (default: float16)")

    v = sub.add_parser(
        "evaluate", help="FHD (or FID), KID, precision/recall and nearest-training-face "
        "distances of a checkpoint's samples; writes <name>.metrics.json beside it",
        description="example: python train.py evaluate checkpoints/default.pt "
        "--data ../shared/data/animefaces  (see docs/metrics.md)")
    v.set_defaults(func=_cmd_evaluate)
    v.add_argument("checkpoint", type=Path)
    v.add_argument("--data", type=Path, help="the training faces (default: the checkpoint's "
                   "data.path)")
    v.add_argument("--samples", type=int, help="generated faces, seeds 0..N-1 (default: "
                   "metrics.samples, 5000)")
    v.add_argument("--features", help="lite2 (FLD on EfficientNet-Lite2, FHD too), hog (FHD, "
                   "weight-free) or inception (FID; needs --inception-weights); default: "
                   "metrics.features")
    v.add_argument("--inception-weights", type=Path, help="pytorch-fid's "
                   "pt_inception-2015-12-05-6726825d.pth")
    v.add_argument("--index", type=Path, help="memorisation index (`index` command) for the "
                   "nearest-face distances (default: computed from --data)")
    v.add_argument("--config", type=Path, help=CONFIG_HELP)
    v.add_argument("overrides", nargs="*", metavar="key=value",
                   help="metrics.* settings, e.g. metrics.samples=1000 metrics.device=cpu")
    v.add_argument("--cache-dir", default=".cache/datasets",
                   help="decoded-faces cache, 'none' for no cache (default: .cache/datasets)")
    v.add_argument("--no-write", action="store_true", help="print only; no metrics file")

    def folder_to_file(name: str, func, summary: str, example: str, out: str) -> None:
        # A command that reads every face of a folder into one .npz file.
        x = sub.add_parser(name, help=summary, description=f"example: {example}")
        x.set_defaults(func=func)
        x.add_argument("folder", type=Path)
        x.add_argument("--out", type=Path, required=True, help=f"the .npz {out} file to write")
        x.add_argument("--cache-dir", default=".cache/datasets",
                       help="decoded-faces cache, 'none' for no cache (default: "
                       ".cache/datasets)")

    folder_to_file("index", _cmd_index, "build the memorisation index of a face folder (for "
                   "the bot's guard and `evaluate --index`)",
                   "python train.py index ../shared/data/animefaces --out data/faces-index.npz",
                   "index")
    folder_to_file("critic", _cmd_critic, "build the realism critic of a face folder (the "
                   "bot's curation: bot.curate)",
                   "python train.py critic ../shared/data/animefaces --out "
                   "checkpoints/critic.npz  (gan/realism.py says what it holds)", "critic")
    return p


def _cmd_train(a) -> int:
    from gan.config import trainer_config
    from gan.training import train

    cfg = trainer_config(read_config(find_config(a.config), a.overrides))
    run_dir, last = train(cfg)
    print(f"run folder: {run_dir}\nlast checkpoint: {last}")
    return 0


def _cmd_resume(a) -> int:
    from gan.checkpoint import load_checkpoint
    from gan.config import resolve
    from gan.training import latest_checkpoint, train

    path = a.run
    if path.is_dir():
        path = latest_checkpoint(path)
        if path is None:
            raise UsageError(f"{a.run}: no ckpt-*.pt checkpoint to resume from")
    ck = load_checkpoint(path)
    over = read_config(None, a.overrides)
    if set(over.tree) - {"train"}:
        raise UsageError("resume may only change train.* settings (the model must stay the same)")
    cfg = resolve(merge(ck.config, over.tree), over)
    run_dir, last = train(cfg, resume=path)
    print(f"run folder: {run_dir}\nlast checkpoint: {last}")
    return 0


def _cmd_clean(a) -> int:
    from gan.data import clean

    report = clean(a.folder, a.move_to, min_size=a.min_size, near_dup_bits=a.near_dup_bits)
    print("\n".join(report.lines()))
    if a.move_to and report.flagged:
        print(f"moved {report.flagged} file(s) to {a.move_to}/")
    return 0


def _make_folder(folder: Path) -> None:
    """mkdir -p, said aloud: a typo in --out should not quietly grow a tree somewhere."""
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        print(f"created the folder {folder.resolve()}")


def _cmd_sample(a) -> int:
    from gan.sampling import generate_array, grid

    seeds = parse_seeds(a.seeds)
    images = generate_array(a.checkpoint, seeds)
    if a.separate:
        _make_folder(a.out)
        from PIL import Image
        for s, img in zip(seeds, images):
            Image.fromarray(img).save(a.out / f"seed{s:05d}.png")
        print(f"wrote {len(seeds)} images to {a.out}/")
    else:
        _make_folder(a.out.parent)
        grid(images, scale=a.scale).save(a.out)
        print(f"wrote a grid of {len(seeds)} faces (seeds {a.seeds}) to {a.out}")
    return 0


def _cmd_interpolate(a) -> int:
    from gan.sampling import interpolate

    if a.frames < 2:
        raise UsageError("--frames must be at least 2")
    frames = interpolate(a.checkpoint, a.seed_a, a.seed_b, a.frames)
    frames = [f.resize((128, 128)) for f in frames]
    frames = frames + frames[::-1][1:-1]  # there and back, so the loop is smooth
    _make_folder(a.out.parent)
    frames[0].save(a.out, save_all=True, append_images=frames[1:], duration=80, loop=0)
    print(f"wrote {a.out}: {len(frames)} frames, seed {a.seed_a} -> {a.seed_b} in {a.frames} "
          "and back")
    return 0


def _cmd_export(a) -> int:
    from gan.checkpoint import export_checkpoint, load_checkpoint, read_metrics

    ck = load_checkpoint(a.checkpoint)
    measured = read_metrics(a.checkpoint)  # the metrics of this very file travel along
    if measured is not None:
        ck.metrics = measured
    out = export_checkpoint(ck, a.out, fp16=not a.fp32)
    note = ", with its metrics" if ck.metrics else ""
    print(f"exported {a.checkpoint} -> {out} ({out.stat().st_size / 1e6:.1f} MB{note})")
    return 0


def _cache(text: str) -> Path | None:
    return None if text.lower() in ("none", "null", "") else Path(text)


def _cmd_evaluate(a) -> int:
    from gan.checkpoint import load_checkpoint
    from gan.config import metrics_config
    from gan.metrics import evaluate, write_metrics

    source = read_config(find_config(a.config), a.overrides)
    cfg = metrics_config(source, {"samples": a.samples, "features": a.features,
                                  "inception_weights": a.inception_weights})
    data = a.data
    if data is None:
        data = load_checkpoint(a.checkpoint).cfg.data.path
        if data is None:
            raise UsageError("--data is needed: the checkpoint does not name its faces folder")
    m = evaluate(a.checkpoint, data, cfg, index=a.index, cache_dir=_cache(a.cache_dir))
    metric = next(k for k in ("fld", "fid", "fhd") if k in m)
    also = f"  (FHD {m['fhd']:.4g})" if metric != "fhd" and "fhd" in m else ""
    nn, closest = m["nn_distance"], m["nn_distance"]["closest"]
    print(f"{metric.upper()} {m[metric]:.4g}{also}  KID {m['kid_mean']:.3g} +- "
          f"{m['kid_std']:.2g}  precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
          f"({m['extractor']} features, {m['samples']} samples vs {m['reference_images']} faces, "
          f"{m['seconds']:.0f} s)")
    print(f"nearest training face, distance (0 = a copy): min {nn['min']:.3f}  p1 {nn['p1']:.3f}"
          f"  p5 {nn['p5']:.3f}  median {nn['p50']:.3f}; closest: seed {closest['seed']} "
          f"~ {closest['face']}")
    if not a.no_write:
        print(f"wrote {write_metrics(a.checkpoint, m)}")
    return 0


def _cmd_index(a) -> int:
    from gan.memorisation import build_index

    index = build_index(a.folder, a.out, _cache(a.cache_dir))
    print(f"indexed {len(index)} faces of {a.folder} into {a.out} "
          f"({a.out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _cmd_critic(a) -> int:
    from gan.realism import build_critic

    critic = build_critic(a.folder, a.out, _cache(a.cache_dir))
    print(f"realism critic of {critic.faces} faces of {a.folder} in {a.out} "
          f"({a.out.stat().st_size / 1e6:.1f} MB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["train", *argv]  # `python train.py key=value ...` trains
    parser = _parser()
    args, overrides = parse_command_line(parser, argv)
    if overrides and not hasattr(args, "overrides"):
        parser.error(f"{args.command} takes no key=value settings: {' '.join(overrides)}")
    args.overrides = overrides
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from gan.training import TrainingDiverged

    try:
        return args.func(args)
    except UserError as e:  # anything else is a bug: its traceback is kept
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
