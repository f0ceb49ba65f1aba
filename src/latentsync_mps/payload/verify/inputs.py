"""The inputs verify makes: a clip with a face-like pattern, its audio track, and where the face's
landmarks are; and the frames of a video read back, independently of the tree."""

from __future__ import annotations

import math
import wave
from pathlib import Path

FPS = 25
SAMPLE_RATE = 16000


def face_landmarks(width: int, height: int):
    """Where the synthetic face's brows, nose and mouth are in every frame."""
    return {
        "left_brow": (0.36 * width, 0.36 * height),
        "right_brow": (0.64 * width, 0.36 * height),
        "nose": (0.5 * width, 0.52 * height),
        "mouth": (0.5 * width, 0.68 * height),
    }


def make_clip(path: Path, frames: int, size: int) -> None:
    import numpy as np

    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    marks = face_landmarks(size, size)
    base = np.zeros((size, size, 3), np.float32) + np.array([40, 60, 90], np.float32)  # background
    face = ((xs - size / 2) / (0.32 * size)) ** 2 + ((ys - 0.52 * size) / (0.42 * size)) ** 2 <= 1
    base[face] = (205, 160, 130)  # skin
    for key in ("left_brow", "right_brow"):
        cx, cy = marks[key]
        base[(abs(xs - cx) < 0.07 * size) & (abs(ys - cy) < 0.015 * size + 1)] = (60, 40, 30)
    video = []
    for index in range(frames):
        frame = base.copy()
        cx, cy = marks["mouth"]
        opening = 0.02 + 0.03 * (1 + math.sin(index / 2)) / 2  # the mouth opens and closes
        mouth = ((xs - cx) / (0.12 * size)) ** 2 + ((ys - cy) / (opening * size + 1)) ** 2 <= 1
        frame[mouth] = (150, 40, 50)
        video.append(frame.clip(0, 255).astype(np.uint8))
    write_video(path, np.stack(video), FPS)


def write_video(path: Path, frames, fps: int) -> None:
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, macro_block_size=1, quality=9)
    writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()


def make_audio(path: Path, seconds: float) -> None:
    samples = int(seconds * SAMPLE_RATE)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        data = bytearray()
        for n in range(samples):
            # A vowel-like sound: a 140 Hz voice with two formants, and syllables at 4 Hz.
            t = n / SAMPLE_RATE
            envelope = 0.5 + 0.5 * math.sin(2 * math.pi * 4 * t)
            value = envelope * (
                0.5 * math.sin(2 * math.pi * 140 * t)
                + 0.3 * math.sin(2 * math.pi * 700 * t)
                + 0.2 * math.sin(2 * math.pi * 1200 * t)
            )
            data += int(max(-1.0, min(1.0, value)) * 20000).to_bytes(2, "little", signed=True)
        handle.writeframes(bytes(data))


def read_video_frames(path: Path):
    """Frames and fps of a video, read independently of the tree (imageio-ffmpeg)."""
    import imageio_ffmpeg
    import numpy as np

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    width, height = meta["size"]
    frames = [np.frombuffer(chunk, np.uint8).reshape(height, width, 3) for chunk in reader]
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8), float(meta["fps"])
