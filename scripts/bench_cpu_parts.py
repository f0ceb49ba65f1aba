"""Time the parts of a LatentSync run that stay on the CPU on a Mac too, per frame (issue 22).

    /work/venv-ls/bin/python scripts/bench_cpu_parts.py [--frames 50] [--json]

Run it under an interpreter with the upstream stack (decord, imageio-ffmpeg, kornia, onnxruntime,
torchvision): scripts/bench.py --only-cpu-parts --cpu-python PY does, and with --write keeps the
figures in patches/cpu-measured.json, which `forecast`'s estimate adds to the GPU time. Nothing of
an upstream tree is imported: each part is the same library call the release makes, at its sizes
(a 1280x720 clip at 25 fps, 512x512 faces as 1.6 and main use).

- video decode: decord's VideoReader over an H.264 clip (upstream's read_video);
- video encode: imageio's libx264 writer with upstream's settings (crf 13);
- face detection: ONNX Runtime's CPU provider running a stand-in network. InsightFace's detector
  (det_10g, SCRFD-10GF: 10 GMACs at 640x480) cannot be downloaded here, so a torchvision ResNet-18
  body with random weights, of counted MACs at the same input size, is timed and scaled to 10 GMACs;
- affine warp and restore: kornia's warp_affine into the 512x512 face and back, with the mask's
  erosion and blur (AlignRestore's calls), in float32 on the CPU: where the warp runs when it falls
  back to the CPU;
- audio features: whisper's log-mel spectrogram (torch.stft, 400-sample window, hop 160, 80 mels)
  of 16 kHz audio, per video frame (40 ms). The whisper encoder runs on the GPU and is not timed.

Single-threaded (torch, ONNX Runtime, OpenCV), so the figures are per core and repeatable on a
shared machine; a Mac's performance cores are faster and more numerous: a bound from above.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

WIDTH, HEIGHT, FPS, FACE = 1280, 720, 25, 512
DETECTOR_MACS = 10e9  # SCRFD-10GF (InsightFace's det_10g) at 640x480


def _best(function, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def _frames(count: int):
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    # Moving content, so the encoder has real work (a still frame encodes to almost nothing).
    return [np.roll(base, shift=4 * i, axis=1) for i in range(count)]


def video_encode(frames, path: Path) -> float:
    import imageio

    def write():
        with imageio.get_writer(
            str(path),
            fps=FPS,
            codec="libx264",
            macro_block_size=None,
            ffmpeg_params=["-crf", "13"],
            ffmpeg_log_level="error",
        ) as writer:
            for frame in frames:
                writer.append_data(frame)

    return _best(write, 2) / len(frames)


def video_decode(path: Path, count: int) -> float:
    from decord import VideoReader, cpu

    def read():
        reader = VideoReader(str(path), ctx=cpu(0), num_threads=1)
        reader.get_batch(list(range(len(reader)))).asnumpy()

    return _best(read) / count


def face_detection() -> dict:
    import io

    import numpy as np
    import onnxruntime
    import torch
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    body = torch.nn.Sequential(*list(torchvision.models.resnet18(weights=None).children())[:-2]).eval()
    sample = torch.zeros(1, 3, 480, 640)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        body(sample)
    macs = counter.get_total_flops() / 2
    buffer = io.BytesIO()
    torch.onnx.export(body, (sample,), buffer, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros((1, 3, 480, 640), dtype=np.float32)}
    session.run(None, feed)  # warm-up
    seconds = _best(lambda: session.run(None, feed), 5)
    return {
        "per_frame_s": seconds * DETECTOR_MACS / macs,
        "stand_in_s": seconds,
        "stand_in_gmacs": round(macs / 1e9, 2),
        "how": "ONNX Runtime CPU provider, 1 thread; a ResNet-18 body at 640x480 scaled to det_10g's 10 GMACs",
    }


def affine_warp(count: int) -> float:
    import kornia
    import torch

    torch.set_num_threads(1)
    frames = torch.rand(count, 3, HEIGHT, WIDTH)
    matrix = torch.tensor([[[0.6, 0.05, -300.0], [-0.05, 0.6, -50.0]]]).repeat(count, 1, 1)
    inverse = kornia.geometry.transform.invert_affine_transform(matrix)
    kernel = torch.ones(3, 3)

    def run():
        faces = kornia.geometry.transform.warp_affine(frames, matrix, (FACE, FACE), mode="bilinear")
        back = kornia.geometry.transform.warp_affine(faces, inverse, (HEIGHT, WIDTH), mode="bilinear")
        mask = kornia.geometry.transform.warp_affine(torch.ones(count, 1, FACE, FACE), inverse, (HEIGHT, WIDTH))
        mask = kornia.morphology.erosion(mask, kernel)
        mask = kornia.filters.gaussian_blur2d(mask, (31, 31), (8.0, 8.0))
        return back * mask + frames * (1 - mask)

    return _best(run, 2) / count


def audio_features(seconds: float = 10.0) -> float:
    import torch

    torch.set_num_threads(1)
    audio = torch.randn(int(16000 * seconds))
    window = torch.hann_window(400)
    filters = torch.rand(80, 201)

    def run():
        stft = torch.stft(audio, 400, 160, window=window, return_complex=True)
        magnitudes = stft[..., :-1].abs() ** 2
        mel = (filters @ magnitudes).clamp(min=1e-10).log10()
        return (torch.maximum(mel, mel.max() - 8.0) + 4.0) / 4.0

    return _best(run, 5) / (seconds * FPS)


def measure(count: int) -> dict:
    frames = _frames(count)
    with tempfile.TemporaryDirectory(prefix="lsync-cpu-parts-") as work:
        clip = Path(work) / "clip.mp4"
        encode = video_encode(frames, clip)
        decode = video_decode(clip, count)
    detection = face_detection()
    parts = {
        "video decode": {"per_frame_s": decode, "how": f"decord VideoReader, 1 thread, {WIDTH}x{HEIGHT} H.264"},
        "video encode": {
            "per_frame_s": encode,
            "how": f"imageio libx264 crf 13, {WIDTH}x{HEIGHT} (ffmpeg's own threads; noise frames: a hard case)",
        },
        "face detection": detection,
        "affine warp and restore": {
            # On the GPU in a ported 1.6 or main (kornia on mps): added only when it falls back to the CPU.
            "counted": False,
            "per_frame_s": affine_warp(min(count, 16)),
            "how": f"kornia warp_affine to {FACE}x{FACE} and back, mask erosion and blur, float32, 1 thread",
        },
        "audio features": {"per_frame_s": audio_features(), "how": "log-mel spectrogram (torch.stft), 1 thread"},
    }
    for part in parts.values():
        part["per_frame_s"] = round(part["per_frame_s"], 5)
    return parts


def versions() -> dict:
    """The libraries that were timed, as this interpreter has them."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "onnxruntime", "eva-decord", "decord", "imageio-ffmpeg", "kornia", "torchvision"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50, help="frames of the synthetic clip")
    parser.parse_args()
    args = parser.parse_args()
    print(json.dumps({"parts": measure(args.frames), "versions": versions()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
