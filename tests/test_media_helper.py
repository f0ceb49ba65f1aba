"""The runtime helper's media I/O: what replaces torchvision.io's read_video/write_video,
torchaudio's load/save/Resample, and the `ffmpeg` found on PATH (issue 20). Same tensors in and
out as the calls they replace, with PyAV, soundfile and plain torch only."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import types

import pytest

torch = pytest.importorskip("torch", reason="the runtime helper is exercised with the verify extra (torch) installed")
av = pytest.importorskip("av", reason="the verify extra installs PyAV")
soundfile = pytest.importorskip("soundfile", reason="the verify extra installs soundfile")

from latentsync_mps.payload.runtime import _lsync_port as helper  # noqa: E402


def moving_square(frames=12, height=64, width=96):
    """[T, H, W, 3] uint8: a bright square that moves right on a dark ground, one step a frame."""
    video = torch.full((frames, height, width, 3), 30, dtype=torch.uint8)
    for t in range(frames):
        video[t, 16:48, 4 * t : 4 * t + 32] = torch.tensor([220, 180, 40], dtype=torch.uint8)
    return video


def test_write_then_read_video_keeps_the_frames_shapes_and_rate(tmp_path):
    path = str(tmp_path / "clip.mp4")
    video = moving_square()
    helper.write_video(path, video, fps=25, video_codec="h264")  # the wrapper's own call
    frames, audio, info = helper.read_video(path, pts_unit="sec")
    assert frames.dtype == torch.uint8 and tuple(frames.shape) == (12, 64, 96, 3)
    assert info == {"video_fps": 25.0}
    assert tuple(audio.shape) == (1, 0)  # torchvision's answer for a file with no audio stream
    error = (frames.float() - video.float()).abs().mean().item()
    assert error < 4, f"mean error {error} after an h264 round trip"
    # The square moved: frame 0 and frame 11 differ where it was.
    assert frames[0, 32, 20, 0] > 150 and frames[11, 32, 20, 0] < 80


def test_read_video_window_and_channels_first(tmp_path):
    path = str(tmp_path / "clip.mp4")
    helper.write_video(path, moving_square(frames=25).numpy(), fps=25.0)  # numpy and a float rate work too
    frames, _, _ = helper.read_video(path, start_pts=0.2, end_pts=0.48, pts_unit="sec", output_format="TCHW")
    assert tuple(frames.shape) == (8, 3, 64, 96)  # frames 5..12 at 25 fps
    with pytest.raises(ValueError, match="output_format"):
        helper.read_video(path, output_format="HWC")
    with pytest.raises(RuntimeError, match="File not found"):
        helper.read_video(str(tmp_path / "missing.mp4"))


def test_write_video_with_audio_reads_back_both_streams(tmp_path):
    path = str(tmp_path / "talk.mp4")
    rate = 16000
    t = torch.arange(rate, dtype=torch.float32) / rate
    tone = 0.5 * torch.sin(2 * math.pi * 440 * t)[None].repeat(2, 1)
    helper.write_video(path, moving_square(frames=25), 25, audio_array=tone, audio_fps=rate, audio_codec="aac")
    frames, audio, info = helper.read_video(path, pts_unit="sec")
    assert tuple(frames.shape) == (25, 64, 96, 3)
    assert info["audio_fps"] == rate and info["video_fps"] == 25.0
    assert audio.dtype == torch.float32 and audio.shape[0] == 2
    assert abs(audio.shape[1] - rate) < 2048  # AAC pads by up to a frame or two
    assert 0.3 < audio.abs().max().item() < 0.7


def tone(channels=2, rate=22050, seconds=0.5):
    t = torch.arange(int(rate * seconds), dtype=torch.float32) / rate
    return torch.stack([0.6 * torch.sin(2 * math.pi * (330 + 110 * c) * t) for c in range(channels)])


def test_save_and_load_audio_as_torchaudio_does(tmp_path):
    path = str(tmp_path / "voice.wav")
    wave = tone()
    helper.save_audio(path, wave, 22050)
    assert soundfile.info(path).subtype == "FLOAT"  # a float tensor stays float, as torchaudio writes it
    loaded, rate = helper.load_audio(path)
    assert rate == 22050 and loaded.dtype == torch.float32 and tuple(loaded.shape) == (2, 11025)
    assert torch.equal(loaded, wave)
    part, _ = helper.load_audio(path, frame_offset=100, num_frames=50)
    assert torch.equal(part, wave[:, 100:150])
    last, _ = helper.load_audio(path, channels_first=False)
    assert tuple(last.shape) == (11025, 2)


def test_save_audio_with_torchaudio_encoding_arguments(tmp_path):
    path = str(tmp_path / "pcm.wav")
    helper.save_audio(path, tone(channels=1), 16000, encoding="PCM_S", bits_per_sample=16)
    assert soundfile.info(path).subtype == "PCM_16"
    raw, _ = helper.load_audio(path, normalize=False)
    assert raw.dtype == torch.int16
    loaded, _ = helper.load_audio(path)
    assert (loaded - tone(channels=1)).abs().max().item() < 1e-4


def test_audio_without_soundfile_goes_through_pyav(tmp_path, monkeypatch):
    monkeypatch.setattr(helper, "_soundfile", lambda: None)  # ComfyUI Desktop's stack has no soundfile
    path = str(tmp_path / "voice.wav")
    wave = tone(channels=1, rate=16000)
    helper.save_audio(path, wave, 16000)
    loaded, rate = helper.load_audio(path)
    assert rate == 16000 and tuple(loaded.shape) == (1, 8000)
    assert torch.allclose(loaded, wave, atol=1e-6)


def test_load_audio_reads_what_libsndfile_cannot(tmp_path):
    path = str(tmp_path / "talk.mp4")
    helper.write_video(path, moving_square(), 25, audio_array=tone(rate=16000), audio_fps=16000, audio_codec="aac")
    loaded, rate = helper.load_audio(path)
    assert rate == 16000 and loaded.shape[0] == 2 and loaded.dtype == torch.float32


# torchaudio 2.11.1's transforms.Resample(44100, 16000) of the first 64 samples of
# sin(2 pi 440 t) + 0.25 sin(2 pi 3000 t) at 44.1 kHz (torch 2.14.1, Linux x86_64, rounded to 7 places).
# Derived with torchaudio installed; the helper's output equalled it bit for bit there.
TORCHAUDIO_44100_TO_16000 = [
    0.0454042, 0.3957547, 0.5190111, 0.3980926, 0.3885115, 0.6647214, 1.0378015, 1.1667404,
    0.9825072, 0.7690111, 0.8110412, 1.0420165, 1.1266322, 0.876323, 0.4845904, 0.2915284,
    0.3682081, 0.4339198, 0.2077682, -0.2327951, -0.5680026, -0.5437156, -0.4823346, -0.2482924,
]  # fmt: skip


def two_tones():
    t = torch.arange(64, dtype=torch.float32)
    return (torch.sin(2 * math.pi * 440 * t / 44100) + 0.25 * torch.sin(2 * math.pi * 3000 * t / 44100))[None]


def test_resampler_gives_torchaudios_output():
    out = helper.resampler(orig_freq=44100, new_freq=16000)(two_tones())
    assert tuple(out.shape) == (1, 24)
    assert torch.allclose(out[0], torch.tensor(TORCHAUDIO_44100_TO_16000), atol=1e-6)
    try:
        import torchaudio
    except Exception:  # not installed, or a build that does not load on this torch
        torchaudio = None
    if torchaudio is not None:  # then against the installed torchaudio too, on other rates and methods
        noise = torch.randn(2, 3000, generator=torch.Generator().manual_seed(0))
        for rates in [(44100, 16000), (16000, 48000), (48000, 44100), (24000, 16000)]:
            assert torch.equal(helper.resampler(*rates)(noise), torchaudio.transforms.Resample(*rates)(noise))
        kaiser = {"resampling_method": "sinc_interp_kaiser", "beta": 8.0}
        expected = torchaudio.functional.resample(noise, 22050, 16000, **kaiser)
        assert torch.equal(helper.resample(noise, 22050, 16000, **kaiser), expected)


def test_resampler_is_a_module_that_moves_and_passes_equal_rates_through():
    module = helper.resampler(16000, 16000)
    wave = tone(rate=16000)
    assert module(wave) is wave
    down = helper.resampler(orig_freq=48000, new_freq=16000).to("cpu")
    assert isinstance(down, torch.nn.Module) and "kernel" in dict(down.named_buffers())
    assert tuple(down(torch.zeros(3, 2, 4800)).shape) == (3, 2, 1600)  # leading dimensions kept
    with pytest.raises(TypeError, match="floating point"):
        down(torch.zeros(1, 480, dtype=torch.int16))
    with pytest.raises(ValueError, match="integer frequencies"):
        helper.resampler(44100.5, 16000)


def fake_which(found: dict[str, str]):
    def which(name, path=None):
        return found.get(path or "PATH")

    return which


def test_ffmpeg_prefers_path_then_homebrew_then_imageio(monkeypatch, tmp_path):
    import shutil

    bundled = tmp_path / "ffmpeg-bundled"
    bundled.write_text("")
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", types.SimpleNamespace(get_ffmpeg_exe=lambda: str(bundled)))
    on_both = {"PATH": "/usr/bin/ffmpeg", "/opt/homebrew/bin": "/opt/homebrew/bin/ffmpeg"}
    monkeypatch.setattr(shutil, "which", fake_which(on_both))
    assert helper.ffmpeg() == "/usr/bin/ffmpeg"
    monkeypatch.setattr(shutil, "which", fake_which({"/usr/local/bin": "/usr/local/bin/ffmpeg"}))
    assert helper.ffmpeg() == "/usr/local/bin/ffmpeg"  # an app from the Dock: no Homebrew on PATH
    monkeypatch.setattr(shutil, "which", fake_which({}))
    assert helper.ffmpeg() == str(bundled)
    spaced = tmp_path / "Application Support" / "ffmpeg"
    spaced.parent.mkdir()
    spaced.write_text("")
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", types.SimpleNamespace(get_ffmpeg_exe=lambda: str(spaced)))
    assert helper.ffmpeg_shell() == f"'{spaced}'"  # quoted for shell=True command lines


def test_no_ffmpeg_anywhere_names_the_fix(monkeypatch, capsys):
    import shutil

    monkeypatch.setattr(shutil, "which", fake_which({}))
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # not installed: import fails
    monkeypatch.delattr(sys, "_lsync_port_ffmpeg_told", raising=False)
    with pytest.raises(FileNotFoundError, match="brew install ffmpeg.*pip install imageio-ffmpeg") as raised:
        helper.ffmpeg()
    assert isinstance(raised.value, helper.FFmpegNotFoundError)
    assert "brew install ffmpeg" in capsys.readouterr().err  # said once even if the caller swallows it
    with pytest.raises(helper.FFmpegNotFoundError):
        helper.ffmpeg_shell()
    assert capsys.readouterr().err == ""


def test_ffmpeg_runs_when_one_is_installed():
    pytest.importorskip("imageio_ffmpeg", reason="the verify extra installs imageio-ffmpeg")
    done = subprocess.run([helper.ffmpeg(), "-version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("ffmpeg version")


def test_comfyui_temp_directory_is_comfyuis_even_after_the_wrapper_repoints_it(tmp_path):
    root = tmp_path / "ComfyUI"
    folder_paths = types.SimpleNamespace(__file__=str(root / "folder_paths.py"), temp_directory="/data/comfy/temp")
    folder_paths.get_temp_directory = lambda: "/tmp/latentsync_1234"  # what the wrapper sets after import
    assert helper.comfyui_temp_directory(folder_paths) == "/data/comfy/temp"  # --temp-directory /data/comfy
    without = types.SimpleNamespace(__file__=str(root / "folder_paths.py"), get_temp_directory=lambda: "/tmp/x")
    assert helper.comfyui_temp_directory(without) == str(root / "temp")  # ComfyUI's default, in its root


def test_importing_the_helper_imports_no_media_library():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import _lsync_port; "
        "print(sorted(m for m in ('av', 'soundfile', 'torchaudio', 'torchvision', 'imageio_ffmpeg', 'numpy') "
        "if m in sys.modules))"
    )
    folder = os.path.dirname(helper.__file__)
    done = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
