"""The finders behind `scan` and apply's residue: every CUDA construct is found while unconverted,
and its ported form is not. Small inline sources, one construct each."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest
from conftest import FIXTURES
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.pack.paths import patches_dir
from latentsync_mps.port.finders import KINDS, find_in_python, find_in_requirements
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.rulepack import load

# The bundled pack's detection rules, as scan and apply run them.
DETECTORS = load(patches_dir()).detectors()


def found(source: str, path: str = "latentsync/models/x.py") -> set[tuple[str, str]]:
    findings = find_in_python(path, textwrap.dedent(source).encode(), DETECTORS)
    for f in findings:
        assert f.why and f.fix, f"{f.kind} has no why or fix"
        assert f.kind in KINDS
    return {(f.kind, f.severity) for f in findings}


# (kind, severity, source that must be found, its ported or harmless form that must not be)
PYTHON_CASES = [
    ("cuda-literal", "error", 'pipe = pipe.to("cuda")', "pipe = pipe.to(_lsync_port.device())"),
    ("cuda-literal", "error", 'enc = Audio2Feature(device="cuda:1")', 'print("on cuda")'),
    ("cuda-literal", "error", "import torch\nd = torch.device(f'cuda:{gpu_id}')", "import torch\nd = torch.device(x)"),
    ("cuda-literal", "error", 'def __init__(self, device="cuda"):\n    pass', 'if device == "cuda":\n    pass'),
    ("cuda-method", "error", "model = model.cuda()", "model = model.to(_lsync_port.device())"),
    ("torch-cuda", "error", "import torch\ntorch.cuda.empty_cache()", "_lsync_port.empty_cache()"),
    ("torch-cuda", "error", "import torch.cuda as tc\ntc.synchronize()", "import torch\ntorch.mps.synchronize()"),
    (
        "onnx-cuda-provider",
        "error",
        'app = FaceAnalysis(providers=["CUDAExecutionProvider"])',
        'app = FaceAnalysis(providers=("CUDAExecutionProvider", "CPUExecutionProvider"))',
    ),
    (
        "fp16-hardcoded",
        "error",
        "import torch\nvae = AutoencoderKL.from_pretrained(p, torch_dtype=torch.float16)",
        "import torch\nvae = AutoencoderKL.from_pretrained(p, torch_dtype=_lsync_port.dtype())",
    ),
    (
        "fp16-hardcoded",
        "error",
        "import torch\nunet = unet.to(dtype=torch.float16)",
        "import torch\ndtype = torch.float16 if ok else torch.float32\nunet = unet.to(dtype=dtype)",
    ),
    ("fp16-hardcoded", "error", "import torch\nx = x.to(torch.half)", "import torch\nx = x.to(torch.float32)"),
    (
        "fp16-hardcoded",
        "error",
        "import torch\ndef __call__(self, weight_dtype=torch.float16):\n    pass",
        "import torch\ndef __call__(self, weight_dtype=_lsync_port.dtype()):\n    pass",
    ),
    ("fp16-hardcoded", "warning", "segment = segment.half()", "segment = segment.float()"),
    (
        "fp16-default",
        "error",
        'dtype = torch.float16 if decode_options.get("fp16", True) else torch.float32',
        'dtype = torch.float16 if decode_options.get("fp16", _lsync_port.whisper_fp16(model.device)) else None',
    ),
    (
        "fp16-default",
        "error",
        "@dataclass\nclass Options:\n    fp16: bool = True",
        "@dataclass\nclass Options:\n    fp16: bool = _lsync_port.whisper_fp16()",
    ),
    (
        "interpolate-fp16",
        "error",
        "import torch.nn.functional as F\ny = F.interpolate(x, scale_factor=2.0)",
        "import torch.nn.functional as F\ny = F.interpolate(x.to(torch.float32), scale_factor=2.0).to(x.dtype)",
    ),
    (
        "interpolate-fp16",
        "error",
        'import torch\ny = torch.nn.functional.interpolate(x, size=s, mode="nearest")',
        'import torch\ny = torch.nn.functional.interpolate(x, size=s, mode="bilinear")',
    ),
    (
        "xformers",
        "error",
        "if is_xformers_available():\n    unet.enable_xformers_memory_efficient_attention()",
        "if _lsync_port.xformers_available():\n    unet.enable_xformers_memory_efficient_attention()",
    ),
    ("xformers", "error", "unet.enable_xformers_memory_efficient_attention()", "unet.set_attn_processor(p)"),
    (
        "sdpa-pin",
        "error",
        "from torch.nn.attention import sdpa_kernel, SDPBackend\n"
        "with sdpa_kernel(SDPBackend.FLASH_ATTENTION):\n    pass",
        "from torch.nn.attention import SDPBackend\n"
        "with _lsync_port.sdpa_kernel(SDPBackend.FLASH_ATTENTION):\n    pass",
    ),
    (
        "sdpa-pin",
        "error",
        "import torch\nwith torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False):\n    pass",
        "from torch.nn.attention import sdpa_kernel, SDPBackend\n"
        "with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):\n    pass",
    ),
    (
        "cpu-branch",
        "error",
        'if device == "cpu":\n    self.face_detector = None\nelse:\n    self.face_detector = FaceDetector(device)',
        'if device == "cpu":\n    self.threads = 4',
    ),
    (
        "cpu-branch",
        "error",
        'if device != "cpu":\n    self.fa = FaceAlignment(device=device)\nelse:\n    self.fa = None',
        "if _lsync_port.runs_face_detection(device):\n    self.fa = FaceAlignment(device=device)\nelse:\n"
        "    self.fa = None",
    ),
    (
        "cuda-only-check",
        "error",
        'if device.type != "cuda":\n    raise ValueError("cuda only")',
        'if _lsync_port.device_type() != "cuda":\n    raise ValueError("xformers needs CUDA")',
    ),
    (
        "cuda-branch",
        "error",
        "if frames.device.type == 'cuda':\n    frames = frames.cpu()",
        "if frames.device.type != 'cpu':\n    frames = frames.cpu()",
    ),
    (
        "cuda-flag",
        "error",
        "import torch\ntorch.backends.cuda.matmul.allow_tf32 = True",
        'import torch\nif _lsync_port.device_type() == "cuda":\n    torch.backends.cuda.matmul.allow_tf32 = True',
    ),
    ("float64", "warning", "x = x.double()", "x = x.float()"),
    ("pin-memory", "warning", "batch = batch.pin_memory()", "batch = batch.contiguous()"),
    ("float64", "warning", "import torch\nx = torch.zeros(3, dtype=torch.float64)", "import torch\nx = torch.zeros(3)"),
    (
        "float64",
        "warning",
        "import torch\ndtype = torch.float64",
        "import torch\ndtype = torch.float32 if is_mps else torch.float64",
    ),
    (
        "float64",
        "warning",
        "import torch\nm = torch.from_numpy(points).to(device)",
        "import torch\nm = torch.from_numpy(points).to(device, dtype=torch.float32)",
    ),
    (
        "mps-attention",
        "warning",
        "import torch.nn.functional as F\nh = F.scaled_dot_product_attention(q, k, v)",
        "h = _lsync_port.scaled_dot_product_attention(q, k, v)",
    ),
    (
        "mps-vae",
        "warning",
        "z = self.vae.encode(images).latent_dist.sample()",
        "z = _lsync_port.vae_encode(self.vae, images).latent_dist.sample()",
    ),
    # What stops a ComfyUI node on a Mac's stack (issue 20).
    (
        "media-io",
        "error",
        "import torchvision.io as io\nio.write_video(path, frames, fps=25)",
        "_lsync_port.write_video(path, frames, fps=25)",
    ),
    (
        "media-io",
        "error",
        "import torchaudio\ntorchaudio.save(path, wave, 16000)",
        "_lsync_port.save_audio(path, wave, 16000)",
    ),
    ("load-time-import", "error", "import torchaudio", "def save():\n    import torchaudio"),
    ("ffmpeg-on-path", "error", 'run(["ffmpeg", "-version"])', 'run([_lsync_port.ffmpeg(), "-version"])'),
    (
        "ffmpeg-on-path",
        "error",
        'cmd = f"ffmpeg -y -i {src} {dst}"',
        'cmd = f"{_lsync_port.ffmpeg_shell()} -y -i {src} {dst}"',
    ),
    (
        "outside-comfyui",
        "error",
        "import os\nd = os.path.dirname(os.path.dirname(os.path.abspath(folder_paths.__file__)))",
        "import os\nd = os.path.dirname(_lsync_port.comfyui_temp_directory(folder_paths))",
    ),
]


@pytest.mark.parametrize(
    ("kind", "severity", "before", "after"), PYTHON_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(PYTHON_CASES)]
)
def test_each_construct_is_found_until_ported(kind, severity, before, after):
    assert (kind, severity) in found(before)
    assert kind not in {k for k, _ in found(after)}


def test_every_python_kind_has_a_case():
    kinds = {c[0] for c in PYTHON_CASES}
    requirement_kinds = {"cuda-index", "no-mac-wheel", "sdist-only"}
    assert kinds | requirement_kinds == set(KINDS)


def test_text_that_merely_mentions_cuda_is_not_found():
    source = '''
    """Runs on "cuda" by default."""
    import torch
    print("cuda", torch.__version__)
    if device == "cuda":
        pass
    if cuda_str == "cuda":
        return 0
    '''
    assert found(source) == set()


REQUIREMENTS = """\
--extra-index-url https://download.pytorch.org/whl/cu121
decord==0.6.0
onnxruntime-gpu==1.21.0
xformers==0.0.23.post1
triton==2.1.0; platform_system != "Darwin"
av==11.0.0
av>=12; platform_system == "Darwin"
insightface==0.7.3
torch==2.5.1
"""


def test_requirements_without_mac_wheels():
    findings = find_in_requirements("requirements.txt", REQUIREMENTS, DETECTORS)
    by_line = {f.line: (f.kind, f.severity) for f in findings}
    assert by_line == {
        1: ("cuda-index", "error"),
        2: ("no-mac-wheel", "error"),
        3: ("no-mac-wheel", "error"),
        4: ("no-mac-wheel", "error"),
        6: ("no-mac-wheel", "error"),
        8: ("sdist-only", "warning"),
    }
    assert all(f.why and f.fix for f in findings)
    assert find_in_requirements("requirements.txt", "av==12.3.0\nav\ninsightface\n", DETECTORS) == []


def test_scan_counts_by_kind_and_severity(tmp_path):
    tree = tmp_path / "latentsync"
    shutil.copytree(FIXTURES / "latentsync-1.0", tree)
    result = CliRunner().invoke(app, ["scan", str(tree), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["profile"] == "latentsync"
    counts = report["counts"]
    for kind in ("xformers", "fp16-hardcoded", "fp16-default", "cpu-branch", "cuda-literal", "no-mac-wheel"):
        assert counts.get(kind, 0) >= 1, kind
    errors = [f for f in report["findings"] if f["severity"] == "error" and f["inference_path"]]
    assert sum(counts.values()) == len(errors)
    assert {"path", "line", "kind", "severity", "code", "why", "fix"} <= set(report["findings"][0])
    assert CliRunner().invoke(app, ["scan", str(tree), "--strict"]).exit_code == 6


def test_apply_residue_uses_the_same_finders(tmp_path, pack):
    """A construct no rule of this release converts is residue, with file, line, why and fix."""
    tree = tmp_path / "latentsync"
    shutil.copytree(FIXTURES / "latentsync-1.5", tree)
    script = tree / "scripts" / "inference.py"
    script.write_text(
        script.read_text()
        + "\n\ndef tune(unet):\n    unet.enable_xformers_memory_efficient_attention()\n"
        + "    torch.backends.cudnn.allow_tf32 = True\n"
    )
    plan = make_plan(tree, pack)
    residue = {(f.path, f.kind) for f in plan.residue}
    assert residue == {("scripts/inference.py", "xformers"), ("scripts/inference.py", "cuda-flag")}
    new_text = next(f.new for f in plan.files if f.path == "scripts/inference.py").decode().splitlines()
    for finding in plan.residue:
        assert "xformers" in new_text[finding.line - 1] or "allow_tf32" in new_text[finding.line - 1]
    result = CliRunner().invoke(app, ["apply", str(tree), "--dry-run", "--strict"])
    assert result.exit_code == 6


def test_scan_reports_drift_and_strict_fails_on_drift_alone(tmp_path):
    """LatentSync 1.5 lost its flash-attention pin a day after the release (02b975b): on such a
    tree the sdpa-flash-pin rule matches nothing where it is expected, with no residue."""
    tree = tmp_path / "latentsync"
    shutil.copytree(FIXTURES / "latentsync-1.5", tree)
    for name in ("attention.py", "motion_module.py"):
        path = tree / "latentsync" / "models" / name
        lines = path.read_text().splitlines(keepends=True)
        kept = []
        for line in lines:
            if "sdpa_kernel(SDPBackend" in line:
                continue  # drop the `with` line and dedent its body by one level
            if "F.scaled_dot_product_attention" in line:
                line = line.replace("            hidden_states", "        hidden_states")
            kept.append(line)
        path.write_text("".join(kept))
    runner = CliRunner()
    result = runner.invoke(app, ["scan", str(tree), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["release"] == "1.5"
    assert {(d["rule_id"], d["file"]) for d in report["drift"]} == {
        ("sdpa-flash-pin", "latentsync/models/attention.py"),
        ("sdpa-flash-pin", "latentsync/models/motion_module.py"),
    }
    assert "sdpa-pin" not in report["counts"]
    text = runner.invoke(app, ["scan", str(tree)]).output
    assert "sdpa-flash-pin: expected at least 1 in latentsync/models/attention.py, found 0" in text
    assert runner.invoke(app, ["scan", str(tree), "--strict"]).exit_code == 6
    assert runner.invoke(app, ["apply", str(tree), "--dry-run", "--strict"]).exit_code == 6


def kinds_found(source: str) -> list[tuple[int, str, str]]:
    return [
        (f.line, f.kind, f.severity)
        for f in find_in_python("latentsync/x.py", textwrap.dedent(source).encode(), DETECTORS)
    ]


def test_one_reference_one_finding_where_rules_supersede_others():
    """report-cuda-flag and the sdpa rules supersede report-torch-cuda on the code they are about
    (the flag's target, the switch's callee); the guard silences all three; a reference elsewhere
    in the same statement is its own finding."""
    assert kinds_found("import torch\ntorch.backends.cudnn.benchmark = True\n") == [(2, "cuda-flag", "error")]
    assert kinds_found("import torch\nwith torch.backends.cuda.sdp_kernel(enable_flash=True):\n    pass\n") == [
        (2, "sdpa-pin", "error")
    ]
    assert kinds_found("import torch\nwith torch.backends.cuda.sdp_kernel(enable_math=True):\n    pass\n") == [
        (2, "cuda-flag", "warning")
    ]
    assert kinds_found("import torch\ntorch.cuda.amp.autocast()\n") == [(2, "torch-cuda", "error")]
    guarded = """\
    import torch
    if _lsync_port.device_type() == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.empty_cache()
        with torch.backends.cuda.sdp_kernel(enable_math=True):
            pass
    """
    assert kinds_found(guarded) == []
    both = kinds_found("import torch\ntorch.backends.cudnn.benchmark = torch.cuda.is_available()\n")
    assert sorted(both) == [(2, "cuda-flag", "error"), (2, "torch-cuda", "error")]
