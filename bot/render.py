"""The daemon's render worker: torch lives in a child process, not in the daemon.

Importing torch (a CUDA build) costs ~500 MB of RSS that never goes back, for an image drawn
every few hours. Inside `in_worker()` (the daemon runs in it) checkpoints are loaded and images
drawn by `python -m bot.render`, started on the first need and gone after `idle_s` without a
request: between posts the daemon holds the database, the channels and the memorisation index,
and nothing else. One-shot commands (`post`, `publish`) draw in their own process as before.
The worker runs the same code (`gan.sampling`), so an image has the same pixels either way.

Protocol, one request at a time: a JSON line to the worker's stdin, a JSON line back, then for
an image its raw uint8 pixels (H x W x 3).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from bot import BotError

IDLE_S = 60.0  # a post's draws come seconds apart; posts, hours


@dataclass
class RemoteCheckpoint:
    """What the bot needs of a checkpoint loaded in the worker (a LoadedCheckpoint's fields)."""

    path: Path
    variant: str
    step: int
    images_seen: int
    metrics: dict[str, Any] | None


class Worker:
    def __init__(self, idle_s: float = IDLE_S):
        self.idle_s = idle_s
        self.proc: subprocess.Popen | None = None

    def _ask(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        # A worker that timed out just as this request went out answers nothing: start another
        # and ask once more.
        for attempt in range(2):
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            try:
                self.proc.stdin.write(json.dumps(request).encode() + b"\n")
                self.proc.stdin.flush()
                head = self.proc.stdout.readline()
                if not head:
                    raise EOFError
                reply = json.loads(head)
                size = reply.get("bytes", 0)
                data = self.proc.stdout.read(size) if size else b""
                if len(data) != size:
                    raise EOFError
            except (BrokenPipeError, EOFError, ValueError):
                code = self.proc.wait()
                self.proc = None
                if attempt:
                    raise BotError(f"the render worker stopped (exit code {code}); see the "
                                   "log above") from None
                continue
            if "error" in reply:
                raise BotError(reply["error"])
            return reply, data
        raise AssertionError("unreachable")

    def _start(self) -> None:
        # The worker finds this package the way this process did, whatever the working folder.
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, "-m", "bot.render", str(self.idle_s)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def describe(self, path: Path) -> RemoteCheckpoint:
        reply, _ = self._ask({"op": "describe", "path": str(path)})
        return RemoteCheckpoint(Path(path), reply["variant"], reply["step"],
                                reply["images_seen"], reply["metrics"])

    def render(self, path: Path, seed: int):
        import numpy as np
        from PIL import Image
        reply, data = self._ask({"op": "render", "path": str(path), "seed": int(seed)})
        return Image.fromarray(np.frombuffer(data, np.uint8).reshape(reply["shape"]))

    def walk(self, path: Path, seeds: list[int], per_leg: int):
        """walk_frames, drawn by the worker."""
        import numpy as np
        reply, data = self._ask({"op": "walk", "path": str(path),
                                 "seeds": [int(k) for k in seeds], "per_leg": int(per_leg)})
        return np.frombuffer(data, np.uint8).reshape(reply["shape"])

    def candidates(self, path: Path, seeds: list[int], critic: Path | None):
        """draw_candidates, by the worker: one request for a post's every candidate."""
        import numpy as np
        reply, data = self._ask({"op": "candidates", "path": str(path),
                                 "seeds": [int(k) for k in seeds],
                                 "critic": str(critic) if critic is not None else None})
        return np.frombuffer(data, np.uint8).reshape(reply["shape"]), reply["scores"]

    def mp4(self, gif: Path, fps: float, scale: int, out: Path) -> None:
        """bot.animation.write_mp4 of a stored GIF's frames, by the worker: PyAV and the
        encoder (~65 MB) stay out of the daemon too."""
        self._ask({"op": "mp4", "gif": str(gif), "fps": fps, "scale": scale, "out": str(out)})

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()  # the worker reads EOF and exits
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


_worker: Worker | None = None


@contextmanager
def in_worker(idle_s: float = IDLE_S) -> Iterator[Worker]:
    """Within: this process loads checkpoints and draws images in a worker process."""
    global _worker
    _worker = Worker(idle_s)
    try:
        yield _worker
    finally:
        _worker.close()
        _worker = None


def worker() -> Worker | None:
    return _worker


def walk_frames(ck: Any, seeds: list[int], per_leg: int):
    """The frames (N x 64 x 64 x 3, uint8) of a looping walk through the latent space: from
    each seed's face to the next one's and from the last back to the first, `per_leg` frames a
    leg (a leg's end is the next one's first frame, drawn once). `ck`: a loaded checkpoint or
    its path. The same pixels every time (`regenerate`)."""
    import numpy as np
    from gan import interpolate  # torch: in the worker, or a one-shot command
    legs = zip(seeds, seeds[1:] + seeds[:1])
    return np.stack([np.asarray(im) for a, b in legs
                     for im in interpolate(ck, a, b, per_leg + 1)[:-1]])


def draw_candidates(ck: Any, seeds: list[int], critic: Path | str | None):
    """(N x 64 x 64 x 3 uint8 images of `seeds`, their realism scores by the critic file
    `critic`, or None without one): a curated post's candidates (bot/curate.py). `ck`: a
    loaded checkpoint or its path. The images are the pixels `render` gives each seed."""
    # torch: in the worker, or a one-shot command
    from gan import DataError, generate_array, score_images
    images = generate_array(ck, seeds)
    if critic is None:
        return images, None
    try:
        return images, [float(x) for x in score_images(critic, images)]
    except DataError as e:
        raise BotError(f"bot.curate.critic: {e}") from None


# --- the worker process ------------------------------------------------------------------

def _answer(request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    # Here: only the worker process imports torch (through gan.sampling), never the daemon.
    from gan import UserError, cached_checkpoint, generate_array
    try:
        if request["op"] == "describe":
            ck = cached_checkpoint(request["path"])
            return {"variant": ck.variant, "step": ck.step, "images_seen": ck.images_seen,
                    "metrics": ck.metrics}, b""
        if request["op"] == "mp4":
            from bot.animation import gif_frames, write_mp4
            write_mp4(gif_frames(Path(request["gif"])), request["fps"], request["scale"],
                      Path(request["out"]))
            return {}, b""
        if request["op"] == "candidates":
            images, scores = draw_candidates(request["path"], request["seeds"],
                                             request["critic"])
            return ({"shape": list(images.shape), "bytes": images.nbytes, "scores": scores},
                    images.tobytes())
        if request["op"] == "walk":
            frames = walk_frames(request["path"], request["seeds"], request["per_leg"])
            return {"shape": list(frames.shape), "bytes": frames.nbytes}, frames.tobytes()
        image = generate_array(request["path"], [request["seed"]])[0]
        return {"shape": list(image.shape), "bytes": image.nbytes}, image.tobytes()
    except UserError as e:  # a bad checkpoint or critic file: one line, from the daemon
        return {"error": str(e)}, b""


def serve(idle_s: float) -> None:
    import torch
    torch.set_num_threads(1)  # one 64x64 image: threads only add start-up and memory
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while select.select([inp], [], [], idle_s)[0]:
        line = inp.readline()
        if not line:  # the daemon is gone
            return
        reply, data = _answer(json.loads(line))
        out.write(json.dumps(reply).encode() + b"\n" + data)
        out.flush()


if __name__ == "__main__":
    serve(float(sys.argv[1]) if len(sys.argv) > 1 else IDLE_S)
