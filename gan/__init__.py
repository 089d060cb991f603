"""waifu-gen: a GAN that draws 64x64 anime faces.

What other packages (the bot) use of gan is named here: import it from `gan`, not from its
modules. Each name is loaded on first use (PEP 562), so `import gan` costs nothing and only
the drawing functions (`generate`, `generate_array`, `cached_checkpoint`) and the realism
critic's `score_images` import torch: the bot's command line and its daemon never do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gan.version import __version__  # noqa: F401

_API = {
    "gan.errors": ("UserError", "ConfigError"),
    "gan.files": ("atomic_write", "file_sha256"),
    "gan.configfile": ("CommandLineValue", "ConfigFile", "Override", "RelPath",
                       "describe_errors", "find_config", "parse_command_line", "read_config"),
    "gan.config": ("TOP_LEVEL_KEYS",),
    "gan.checkpoint": ("CheckpointError", "LoadedCheckpoint", "load_checkpoint",
                       "read_metrics"),
    "gan.sampling": ("cached_checkpoint", "generate", "generate_array", "interpolate"),
    "gan.data": ("DataError",),
    "gan.memorisation": ("NearestIndex", "build_index", "load_index"),
    "gan.realism": ("load_critic", "pick", "score_images"),
}
_MODULE_OF = {name: module for module, names in _API.items() for name in names}
__all__ = [*_MODULE_OF]

if TYPE_CHECKING:
    from gan.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint, read_metrics
    from gan.config import TOP_LEVEL_KEYS
    from gan.configfile import (CommandLineValue, ConfigFile, Override, RelPath,
                                describe_errors, find_config, parse_command_line,
                                read_config)
    from gan.data import DataError
    from gan.errors import ConfigError, UserError
    from gan.files import atomic_write, file_sha256
    from gan.memorisation import NearestIndex, build_index, load_index
    from gan.realism import load_critic, pick, score_images
    from gan.sampling import cached_checkpoint, generate, generate_array, interpolate


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'gan' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value  # found directly from now on
    return value
