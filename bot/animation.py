"""The media of animated posts: a walk's frames as a looping GIF and an MP4.

An animated post stores its 64x64 frames as a GIF (the post's image: its hash is what
`regenerate` checks); channels get it enlarged nearest-neighbour (bot.image.scale: 8, 512x512)
as a GIF and as an H.264 MP4, made from the stored GIF's frames. The MP4 is written by PyAV
(FFmpeg's libraries and libx264 inside its wheel: no ffmpeg program is needed), in yuv420p
with no sound, which Mastodon shows as a looping "gifv" and every browser plays. In the daemon
the render worker encodes it (bot/render.py), so PyAV stays out of the daemon's memory.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

def enlarge(frame: np.ndarray, scale: int) -> np.ndarray:
    """Each pixel a scale x scale block: crisp, not blurred."""
    return frame if scale == 1 else np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


def gif_bytes(frames: np.ndarray, fps: float, scale: int = 1) -> bytes:
    """A GIF that loops for ever, `fps` frames a second (GIF counts in hundredths)."""
    images = [Image.fromarray(enlarge(f, scale)) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=round(1000 / fps), optimize=False)
    return buf.getvalue()


def gif_frames(data: bytes | Path) -> np.ndarray:
    """The frames of a GIF, N x H x W x 3."""
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])


def gif_fps(path: Path) -> float:
    with Image.open(path) as im:
        return 1000 / max(1, im.info.get("duration", 100))


def write_mp4(frames: np.ndarray, fps: float, scale: int, path: Path) -> None:
    """An H.264 MP4 of the frames (enlarged `scale` times) at `path`: no sound, the index at
    the front (faststart: a browser starts playing before the end has loaded)."""
    import av  # PyAV: only where a video is made

    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")  # faststart rewrites the file: no BytesIO
    with av.open(str(part), mode="w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.height, stream.width = frames.shape[1] * scale, frames.shape[2] * scale
        stream.pix_fmt = "yuv420p"  # what every player decodes
        # Flat blocks of colour: tuned for animation; crf 18 looks lossless at this size.
        stream.options = {"crf": "18", "preset": "medium", "tune": "animation"}
        for f in frames:
            frame = av.VideoFrame.from_ndarray(enlarge(f, scale), format="rgb24")
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode())  # flush
    part.replace(path)
