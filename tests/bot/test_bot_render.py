"""torch stays out of the daemon: its render worker draws the same pixels, goes away when idle
and comes back; the bot's own modules import neither torch nor scipy; the bot's perceptual
hash has imagehash's bits."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from bot.phash import distance, phash
from bot.render import Worker
from gan.sampling import generate_array
from tests.conftest import REAL_FACES, synthetic_face

REPO = Path(__file__).resolve().parents[2]


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_daemons_process_draws_through_the_worker_without_torch(tiny_checkpoint):
    out = _python(
        "import hashlib, sys, numpy as np\n"
        "from bot.checkpoints import _load, render\n"
        "from bot.render import in_worker\n"
        "with in_worker():\n"
        f"    ck = _load({str(tiny_checkpoint)!r})\n"
        "    pixels = [np.asarray(render(ck, s)).tobytes() for s in (0, 7, 7)]\n"
        "print(ck.variant, ck.step, hashlib.sha256(b''.join(pixels)).hexdigest(),\n"
        "      'torch' in sys.modules)")
    from gan.checkpoint import load_checkpoint
    ck = load_checkpoint(tiny_checkpoint)
    here = generate_array(tiny_checkpoint, [0, 7, 7])
    assert out.split() == [ck.variant, str(ck.step), hashlib.sha256(here.tobytes()).hexdigest(),
                           "False"]


def test_an_idle_worker_exits_and_the_next_draw_starts_another(tiny_checkpoint):
    w = Worker(idle_s=0.5)
    try:
        first = np.asarray(w.render(tiny_checkpoint, 3))
        pid = w.proc.pid
        deadline = time.monotonic() + 30
        while w.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert w.proc.poll() == 0  # gone, and with it torch's memory
        again = np.asarray(w.render(tiny_checkpoint, 3))
        assert w.proc.pid != pid and np.array_equal(first, again)
        assert np.array_equal(first, generate_array(tiny_checkpoint, [3])[0])
    finally:
        w.close()


def test_a_bad_checkpoint_in_the_worker_is_a_bot_error(tmp_path):
    from bot import BotError
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    w = Worker(idle_s=5)
    try:
        with pytest.raises(BotError, match="bad.pt: not a checkpoint file"):
            w.describe(bad)
    finally:
        w.close()


def test_the_bots_modules_import_no_torch_scipy_or_plotting():
    heavy = ("torch", "scipy", "imagehash", "matplotlib", "skimage")
    out = _python("import sys\n"
                  "import bot.cli, bot.posting, bot.scheduler, bot.channels, gan.memorisation\n"
                  f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    assert out == "[]"


def test_perceptual_hash_has_imagehash_bits():
    rng = np.random.default_rng(4)
    images = [Image.fromarray(synthetic_face(rng, 64)) for _ in range(50)]
    images += [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
               for _ in range(20)]
    images += [Image.new("RGB", (64, 64), (30, 60, 90))]  # flat: only the DC term is set
    if REAL_FACES.is_dir():
        images += [Image.open(p) for p in sorted(REAL_FACES.glob("*.jpg"))[:200]]
    ours = [phash(im) for im in images]
    theirs = [imagehash.phash(im) for im in images]
    assert ours == [str(h) for h in theirs]
    assert [distance(ours[0], h) for h in ours] == [theirs[0] - h for h in theirs]
