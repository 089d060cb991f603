"""config.yaml, read once: one YAML reader, one override grammar, one way to say what is wrong.

Every command line (`python train.py`, `python -m bot`) reads the file once into a
`ConfigFile`: the file's settings with the command line's `key=value` overrides merged in.
Override keys are rooted at the top of the file, whatever the command: `train.batch_size=8`,
`metrics.samples=100`, `bot.schedule.interval_minutes=1`; values are YAML (`null`, `true`,
`[a, b]`, `{k: v}`), and a value that is not valid YAML is the string as typed. Each part then
validates its own section of the same tree (`gan.config.Config` the trainer's keys,
`MetricsConfig` the `metrics:` section, the bot's `Settings` the `bot:` section), and every
mistake found is listed, each with where it is (the file, or the override that set it) and
its key.

Relative paths written in the file resolve against the file's folder, so a config works from
any working directory; paths typed on the command line resolve against the working directory,
as a user typing a path expects (`RelPath`).

Light on purpose (yaml and pydantic, no torch): the bot reads its settings with it.
"""

from __future__ import annotations

import argparse
import difflib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Callable, Collection, Sequence, TypeVar, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError, ValidationInfo

from gan.errors import ConfigError

DEFAULT_FILE = Path("config.yaml")  # read when no --config is given and it is there

M = TypeVar("M", bound=BaseModel)


class CommandLineValue(str):
    """A string typed on the command line: a relative path in it means the working
    directory's, not the config file's folder's. Plain `str` once validated."""


def _from_command_line(value: Any) -> Any:
    if isinstance(value, str):
        return CommandLineValue(value)
    if isinstance(value, dict):
        return {k: _from_command_line(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_command_line(v) for v in value]
    return value


def _relative_path(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, (str, Path)):
        return value  # pydantic says what is wrong with it
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    context = info.context or {}
    base = context.get("cwd") if isinstance(value, CommandLineValue) else context.get("base_dir")
    return base / path if base is not None else path


# A path setting: relative to the config file's folder when written in the file, to the working
# directory when typed on the command line. Validated without a ConfigFile (a checkpoint's
# stored config, a run's config.json), it is kept as written.
RelPath = Annotated[Path, BeforeValidator(_relative_path)]


@dataclass(frozen=True)
class Override:
    """One `key=value` of the command line: the key's parts from the top of the file, the
    value (YAML), and how to name it in a message."""

    key: tuple[str, ...]
    value: Any
    label: str

    @classmethod
    def parse(cls, item: str, label: str | None = None) -> Override:
        key, sep, raw = item.lstrip("-").partition("=")  # `--seed=3` reads as seed=3 too
        parts = tuple(key.split("."))
        if not sep or not all(parts):
            raise ConfigError(f"{label or f'override {item!r}'} is not key=value (e.g. "
                              "train.batch_size=32 or bot.schedule.interval_minutes=60)")
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError:
            value = raw  # not YAML, so it can only mean the text itself
        return cls(parts, _from_command_line(value), label or f"command line {item}")

    @classmethod
    def flag(cls, key: tuple[str, ...], value: Any, label: str) -> Override:
        """A setting given by a command-line option (`--samples 100`): its value as argparse
        made it, not YAML; a path in it is the working directory's."""
        return cls(key, _from_command_line(str(value) if isinstance(value, Path) else value),
                   label)


def _set_dotted(tree: dict[str, Any], key: Sequence[str], value: Any, label: str) -> None:
    *parents, leaf = key
    node = tree
    for i, p in enumerate(parents):
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{label}: {'.'.join(key[:i + 1])} is not a section")
        node = child
    node[leaf] = value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`["train.batch_size=32", "variant=dcgan"]` -> a nested dict (values YAML, later items
    win), to merge over a settings tree with `merge`."""
    return read_config(None, items).tree


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, section by section (a value that is not a mapping replaces)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: Path) -> Any:
    """The YAML document of `path` (None for an empty file); one ConfigError line when the file
    is missing or not YAML."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a config file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "cannot parse"
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings class a field holds (through Optional, Annotated), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if (found := _model_of(arg)) is not None:
            return found
    return None


def did_you_mean(model: type[BaseModel], loc: Sequence[Any], prefix: str = "") -> str:
    """' (did you mean train.batch_size?)' for the unknown key at `loc` of `model`, when a
    known one is close enough to be the one meant; else ''."""
    *parents, leaf = [str(x) for x in loc]
    for part in parents:
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field is not None else None
        if model is None:
            return ""
    return closest(leaf, model.model_fields, prefix + "".join(f"{p}." for p in parents))


def closest(word: str, known: Collection[str], prefix: str = "") -> str:
    """' (did you mean <prefix><the known one>?)' when one of `known` is close to `word`."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def describe_errors(e: ValidationError, model: type[BaseModel], prefix: str = "",
                    source_of: Callable[[tuple[str, ...]], str | None] = lambda loc: None
                    ) -> str:
    """Every complaint of `e` on one line, '; ' between them: 'source: key: what', the key
    from the top of the file (`prefix` + pydantic's location in `model`), the source where
    `source_of(that key's parts)` names one."""
    out = []
    for err in e.errors():
        loc = tuple(str(x) for x in err["loc"])
        key = (prefix + ".".join(loc)).rstrip(".")
        if err["type"] == "extra_forbidden":
            text = "unknown key" + did_you_mean(model, loc, prefix)
        else:
            text = err["msg"].removeprefix("Value error, ")
        if key:
            text = f"{key}: {text}"
        source = source_of(tuple(key.split("."))) if key else None
        out.append(f"{source}: {text}" if source else text)
    return "; ".join(dict.fromkeys(out))


@dataclass(frozen=True)
class ConfigFile:
    """A config file read once (or none: all defaults), with the command line's overrides."""

    path: Path | None
    document: Any  # the file's YAML as read: None for an empty file, or without a file
    overrides: tuple[Override, ...]
    tree: dict[str, Any]  # the file's settings with the overrides merged in

    @property
    def folder(self) -> Path | None:
        """Where relative paths written in the file start from: the file's folder, spelt
        as the file was given (None without a file: the working directory)."""
        return None if self.path is None else self.path.parent

    def source_of(self, key: tuple[str, ...], root: int = 0) -> str | None:
        """Who set `key` (a location from the top, as pydantic reports it): the last override
        on it, on one of its sections, or inside it (a section's own check, such as "set
        exactly one of cron and interval_minutes", is about the keys in it; not so for the
        first `root` levels, the section a part validates as a whole); else the file."""
        for o in reversed(self.overrides):
            if key[:len(o.key)] == o.key or (len(key) > root and o.key[:len(key)] == key):
                return o.label
        return None if self.path is None else str(self.path)

    def section(self, name: str) -> dict[str, Any]:
        """The settings under the top-level key `name` ({} when it is absent or empty)."""
        value = self.tree.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.source_of((name,))}: the '{name}:' section must be a "
                              "mapping of settings")
        return value

    def context(self, absolute: bool = False) -> dict[str, Path | None]:
        """The validation context of `RelPath`. `absolute`: both bases made absolute (the
        bot logs and stores its paths); else the file's folder as spelt, and a command-line
        path as typed (the trainer writes them into run folders and checkpoints, where an
        absolute path would pin the file to one machine)."""
        if not absolute:
            return {"base_dir": self.folder, "cwd": None}
        folder = self.path.resolve().parent if self.path is not None else Path.cwd()
        return {"base_dir": folder, "cwd": Path.cwd()}

    def check_keys(self, known: Collection[str], reads: Collection[str], who: str) -> None:
        """Every top-level key, the file's and the overrides', is one of `known`, and every
        override is for a section this command reads (`reads`): one ConfigError with all the
        mistakes otherwise (an override for another program would quietly change nothing)."""
        out = []
        for key in self.tree:
            if key not in known:
                hint = closest(str(key), known) or f" (known: {', '.join(sorted(known))})"
                out.append(f"{self.source_of((key,))}: {key}: unknown key{hint}")
        for o in self.overrides:
            if o.key[0] in known and o.key[0] not in reads:
                out.append(f"{o.label}: {who} does not read the '{o.key[0]}:' settings")
        if out:
            raise ConfigError("; ".join(out))

    def with_overrides(self, overrides: Sequence[str | Override]) -> ConfigFile:
        """This file with more overrides on top (`key=value` strings or `Override`s)."""
        parsed = tuple(o if isinstance(o, Override) else Override.parse(o) for o in overrides)
        over: dict[str, Any] = {}
        for o in parsed:
            _set_dotted(over, o.key, o.value, o.label)
        return replace(self, overrides=self.overrides + parsed, tree=merge(self.tree, over))

    def validate(self, model: type[M], section: str | None = None, *,
                 data: dict[str, Any] | None = None, absolute: bool = False) -> M:
        """`model` from the section `section` of the tree (`data` instead when given), its
        paths resolved (see `context`); ConfigError listing every mistake with its source."""
        if data is None:
            data = self.section(section) if section else self.tree
        try:
            return model.model_validate(data, context=self.context(absolute))
        except ValidationError as e:
            prefix, root = (f"{section}.", 1) if section else ("", 0)
            raise ConfigError(describe_errors(
                e, model, prefix, lambda key: self.source_of(key, root))) from None


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None
                       ) -> tuple[argparse.Namespace, list[str]]:
    """`parser.parse_args(argv)`, and the `key=value` overrides of the command line, wherever
    they stand after the command (before, between or after its options): the words argparse
    does not know that look like one, after those of an `overrides` positional if the command
    has one. Any other unknown word is argparse's usual error."""
    args, extra = parser.parse_known_args(argv)
    unknown = [w for w in extra if w.startswith("-") or "=" not in w]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args, [*getattr(args, "overrides", []), *extra]


def find_config(path: Path | None) -> Path | None:
    """The file a command reads: `path` when given (missing: an error when read), else
    ./config.yaml when it is there, else None (all defaults)."""
    if path is not None:
        return Path(path)
    return DEFAULT_FILE if DEFAULT_FILE.is_file() else None


def read_config(path: Path | None, overrides: Sequence[str | Override] = ()) -> ConfigFile:
    """Read `path` (None: no file) and merge `overrides` (`key=value` strings, rooted at the
    top of the file, or `Override`s) into its settings, later ones winning."""
    document = read_yaml(path) if path is not None else None
    if document is not None and not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return ConfigFile(Path(path) if path is not None else None, document, (),
                      dict(document or {})).with_overrides(overrides)
