"""Checkpoints: one dict that rebuilds its own model, always loaded with weights_only=True.

A training checkpoint holds G, G_ema, D and both optimizers; an exported one holds only G_ema
(for publishing). Both carry the resolved config as plain types, the step, images seen, a
format version and the code version. A checkpoint is untrusted input: a pickle could run code,
so nothing but tensors and plain types is ever unpickled.

A checkpoint's metrics (`python train.py evaluate`) live beside it, in <stem>.metrics.json.

torch is imported by the functions that read or write tensors, not here: the bot's daemon uses
this module (a LoadedCheckpoint's fields, the metrics file) without ever loading torch.
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gan.config import Config, ConfigError, resolve
from gan.errors import UserError
from gan.files import atomic_write, file_sha256
from gan.version import __version__

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

FORMAT = "waifu-gen"
FORMAT_VERSION = 1


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be used; the message names the file."""


@dataclass
class LoadedCheckpoint:
    path: Path
    kind: str  # "training" or "export"
    cfg: Config
    step: int
    images_seen: int
    state: dict[str, Any] = field(repr=False)
    metrics: dict[str, Any] | None = None

    @property
    def variant(self) -> str:
        return self.cfg.variant

    @property
    def config(self) -> dict[str, Any]:
        return self.cfg.to_plain()

    @cached_property
    def G_ema(self) -> nn.Module:
        """The EMA generator, built once per loaded checkpoint (the bot draws up to
        dedup.max_draws images from one): eval mode, float32, CPU. Shared: draw with it,
        never train it."""
        return self.generator(ema=True)

    def generator(self, ema: bool = True) -> nn.Module:
        """A new generator in eval mode, float32, on the CPU (EMA weights by default)."""
        from gan.models import build_generator  # torch: see the module's docstring

        G = build_generator(self.cfg)  # float32: loading casts fp16 exports up
        self.load_weights(G, "G_ema" if ema or "G" not in self.state else "G")
        return G.eval().requires_grad_(False)

    def load_weights(self, module: nn.Module, key: str) -> None:
        """Load the state dict `key` ("G", "G_ema", "D") into `module`, built from this
        checkpoint's config. Weights of another variant (a config edited by hand, HOG weights
        given to a plain G) are a CheckpointError naming the file, not a torch traceback."""
        try:
            module.load_state_dict(self.state[key])
        except RuntimeError as e:
            raise CheckpointError(f"{self.path}: its weights do not fit variant "
                                  f"'{self.variant}' ({key}: {_mismatch(e)})") from None


def _mismatch(e: RuntimeError, width: int = 100, most: int = 2) -> str:
    """The gist of load_state_dict's error: the start of its first problem lines (missing,
    unexpected, mis-shaped keys), without the "Error(s) in loading state_dict" header."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    problems = lines[1:] or lines or [type(e).__name__]
    gist = "; ".join(x if len(x) <= width else x[:width - 3] + "..." for x in problems[:most])
    return gist + (f"; {len(problems) - most} more" if len(problems) > most else "")


def atomic_save(obj: Any, path: Path) -> None:
    """Write next to the target and rename: a crash never leaves a half-written checkpoint."""
    import torch  # here, not at the top: see the module's docstring
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def checkpoint_dict(kind: str, cfg: Config, step: int, images_seen: int,
                    **states: Any) -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "code_version": __version__,
            "kind": kind, "config": cfg.to_plain(), "step": int(step),
            "images_seen": int(images_seen), **states}


def _not_a_torch_file(path: Path) -> str | None:
    """Why the file cannot be a torch.save file, from its first bytes; None if it may be one.
    torch.load would call random bytes a pickle "with objects other than tensors"."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):  # zip; pickle protocol >= 2
        return None
    try:
        text = all(c.isprintable() or c in "\t\r\n" for c in head.decode("utf-8"))
    except UnicodeDecodeError:
        text = False
    return "not a checkpoint file (not a zip/pickle" + ("; it looks like text)" if text else ")")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load and check a checkpoint file; any problem is a CheckpointError naming the file."""
    import torch  # here, not at the top: see the module's docstring
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    not_torch = _not_a_torch_file(path)
    if not_torch:
        raise CheckpointError(f"{path}: {not_torch}")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = "it holds objects other than tensors and plain data, refused unsafe load" \
            if "Weights only load failed" in str(e) else "not a torch checkpoint"
        raise CheckpointError(f"{path}: {reason}") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: "
                              f"{type(e).__name__})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a waifu-gen checkpoint (a state dict or a file "
                              "from another program?)")
    if raw.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {raw['format_version']} is newer than "
                              f"this code understands ({FORMAT_VERSION}); update waifu-gen")
    kind = raw.get("kind")
    needed = {"training": ("G", "G_ema", "D"), "export": ("G_ema",)}.get(kind)
    if needed is None or any(not isinstance(raw.get(k), dict) for k in needed):
        raise CheckpointError(f"{path}: incomplete checkpoint (kind {kind!r})")
    try:
        cfg = resolve(raw["config"])
    except (ConfigError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: its config is not valid here: {e}") from None
    return LoadedCheckpoint(path=path, kind=kind, cfg=cfg, step=int(raw.get("step", 0)),
                            images_seen=int(raw.get("images_seen", 0)), state=raw,
                            metrics=raw.get("metrics"))


def export_checkpoint(ck: LoadedCheckpoint, out: str | Path, fp16: bool = True) -> Path:
    """Write the inference-only file (EMA generator) that the bot publishes."""
    G = ck.generator(ema=True)
    sd = {k: v.half() if fp16 and v.is_floating_point() else v
          for k, v in G.state_dict().items()}
    obj = checkpoint_dict("export", ck.cfg, ck.step, ck.images_seen, G_ema=sd)
    if ck.metrics:
        obj["metrics"] = ck.metrics
    atomic_save(obj, Path(out))
    return Path(out)


# --- the metrics file beside a checkpoint -------------------------------------------------

# Metrics belong to one checkpoint file: default.pt's are default.metrics.json beside it, so
# evaluating another checkpoint of the same folder never replaces them.
METRICS_SUFFIX = ".metrics.json"


def metrics_path(checkpoint: str | Path) -> Path:
    """<stem>.metrics.json beside the checkpoint: checkpoints/default.metrics.json."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + METRICS_SUFFIX)


def write_metrics(checkpoint: str | Path, metrics: dict[str, Any]) -> Path:
    """The checkpoint's own metrics file beside it (it also names the file it measured)."""
    return atomic_write(metrics_path(checkpoint), (json.dumps(metrics, indent=2) + "\n").encode())


def read_metrics(checkpoint: str | Path, sha256: str | None = None,
                 warn: bool = True) -> dict[str, Any] | None:
    """The checkpoint's metrics file, if it measured this very file (same sha256); else None
    (with a warning, unless `warn` is false, when it measured another file)."""
    checkpoint = Path(checkpoint)
    path = metrics_path(checkpoint)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    measured = data.get("checkpoint") or {}
    if measured.get("sha256") == (sha256 or file_sha256(checkpoint)):
        return data
    if warn:
        log.warning("%s measured another file (%s), not %s: not used", path,
                    measured.get("file", "unknown"), checkpoint.name)
    return None
