"""deploy/waifu-gen.service and the Dockerfile: checked as far as this machine allows.

The unit goes through `systemd-analyze verify` (skipped where systemd is absent) and its command
line runs the bot for real against a temporary state directory; the Dockerfile is parsed for the
properties that matter (non-root, CPU torch at the project's pins, the data in the volume, no
secrets). `docker build` itself needs a daemon and network access to Docker Hub and the PyTorch
index: it runs only with WAIFU_DOCKER_BUILD=1.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "deploy" / "waifu-gen.service"
INSTALL = "/opt/waifu-gen"  # where the unit expects the repository
STATE = "/var/lib/waifu-gen"


def _logical_lines(text: str, comment: str = "#") -> list[str]:
    """Lines with backslash continuations joined, comments and blanks dropped."""
    out: list[str] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if line and not line.startswith((comment, ";")):
            out.append(line)
    return out


def unit_sections(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in _logical_lines(text):
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service() -> dict[str, list[str]]:
    return unit_sections(UNIT.read_text())["Service"]


def _exec_args(state_dir: str = STATE) -> list[str]:
    """ExecStart's arguments after `-m bot`, the state directory moved to `state_dir`."""
    argv = shlex.split(service()["ExecStart"][0].replace(STATE, state_dir))
    assert argv[0] == f"{INSTALL}/.venv/bin/python" and argv[1:3] == ["-m", "bot"], argv
    return [a.replace(INSTALL, str(REPO)) for a in argv[3:]]


def _command(args: list[str]) -> str:
    """The bot's command among its arguments (what is neither an option, its value, nor a
    key=value override)."""
    words = [a for i, a in enumerate(args)
             if not a.startswith("-") and "=" not in a and not args[i - 1].startswith("--")]
    assert len(words) == 1, args
    return words[0]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("verify checks that ExecStart exists: needs the repository's .venv")
    # verify also checks that the executable exists: the repository stands in for /opt.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALL, str(REPO)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60)
    # Unknown keys and bad values are only warnings (exit status 0): any line about the file
    # is a failure.
    about_unit = [line for line in (r.stdout + r.stderr).splitlines() if UNIT.name in line]
    assert r.returncode == 0 and not about_unit, r.stdout + r.stderr


def test_unit_runs_as_a_hardened_dedicated_user_and_restarts_on_failure() -> None:
    s = service()
    assert s.get("DynamicUser") == ["yes"] or s.get("User") == ["waifu-gen"]
    assert s["Restart"] == ["on-failure"] and 5 <= int(s["RestartSec"][0]) <= 300
    assert s["StateDirectory"] == ["waifu-gen"]
    assert s["KillSignal"] == ["SIGTERM"] and int(s["TimeoutStopSec"][0]) >= 60
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes"}.items():
        assert s.get(key) == [value], key
    # torch's CPU kernels are generated at run time: W^X memory would kill the daemon.
    assert "MemoryDenyWriteExecute" not in s
    assert _command(_exec_args()) == "run"


def test_unit_documents_every_token_the_config_reads() -> None:
    env_file = service()["EnvironmentFile"][0].lstrip("-")
    text = UNIT.read_text()
    assert env_file in text.split("[Unit]")[0]  # the header says what goes in that file
    wanted = re.findall(r"\benv: (\w+)", (REPO / "config.yaml").read_text())
    assert wanted, "config.yaml names no token variables?"
    header = text.split("[Unit]")[0]
    assert [v for v in wanted if f"{v}=" not in header] == []


@pytest.mark.slow
def test_unit_command_line_keeps_all_data_in_the_state_directory(tmp_path: Path) -> None:
    """ExecStart as it stands (the state directory moved to tmp_path, `run` swapped for
    `status`): the bot takes the overrides, and its database appears there."""
    from bot.config import load_settings
    args = _exec_args(str(tmp_path))
    assert _command(args) == "run"
    config = Path(args[args.index("--config") + 1])
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    settings = load_settings(config, overrides)
    assert settings.data_dir == tmp_path and settings.db_file == tmp_path / "bot.db"
    status = [("status" if a == "run" else a) for a in args]
    r = subprocess.run([sys.executable, "-m", "bot", *status], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "bot.db").is_file()
    assert "daemon: not running" in r.stdout


# ---- the container image


def dockerfile() -> list[tuple[str, str]]:
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in _logical_lines((REPO / "Dockerfile").read_text())]


def _pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(d.split("==") for d in deps if d.startswith(("torch==", "torchvision==")))


def test_dockerfile_installs_cpu_torch_at_the_project_pins() -> None:
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    args = dict(v.split("=", 1) for k, v in steps if k == "ARG" and "=" in v)
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    runs = [v for k, v in steps if k == "RUN"]
    torch_step = next(r for r in runs if "torch==" in r)
    for name, version in _pins().items():
        assert f"{name}=={version}" in torch_step.split()
    assert re.search(r"--index-url \"?\$\{?TORCH_INDEX", torch_step)


def test_dockerfile_runs_the_daemon_as_a_non_root_user_with_data_in_a_volume() -> None:
    from bot.config import load_settings
    steps = dockerfile()
    kinds = [k for k, _ in steps]
    users = [v for k, v in steps if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # The user is in force for what runs: after the last RUN, before the command.
    assert max(i for i, k in enumerate(kinds) if k == "RUN") < kinds.index("USER")
    entry = yaml.safe_load(dict(steps)["ENTRYPOINT"]) + yaml.safe_load(dict(steps)["CMD"])
    assert entry == ["python", "-m", "bot", "run"]
    volume = dict(steps)["VOLUME"]
    assert dict(steps)["WORKDIR"] == "/app" and volume == "/app/data"
    # The shipped config.yaml, read in /app: database, images and outbox all in the volume.
    settings = load_settings(REPO / "config.yaml")
    for path in (settings.data_dir, settings.db_file):
        assert path.relative_to(REPO).parts[0] == "data", path


def test_dockerfile_holds_no_secrets_and_dockerignore_keeps_local_state_out() -> None:
    for kind, value in dockerfile():
        if kind in ("ENV", "ARG"):
            assert not re.search(r"TOKEN|SECRET|PASSWORD|API_KEY", value, re.I), value
    ignored = set(_logical_lines((REPO / ".dockerignore").read_text()))
    assert {".venv", "runs", "data", ".cache", ".git"} <= {p.strip("/") for p in ignored}


@pytest.mark.skipif(os.environ.get("WAIFU_DOCKER_BUILD") != "1",
                    reason="docker build downloads python:3.11-slim and torch: "
                    "set WAIFU_DOCKER_BUILD=1 where docker and the network are there")
def test_docker_image_builds_and_runs_as_non_root() -> None:
    subprocess.run(["docker", "build", "-t", "waifu-gen:test", str(REPO)], check=True,
                   timeout=1800)
    uid = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", "waifu-gen:test",
                          "-u"], capture_output=True, text=True, check=True).stdout
    assert int(uid) != 0
    r = subprocess.run(["docker", "run", "--rm", "waifu-gen:test", "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "python -m bot" in r.stdout
