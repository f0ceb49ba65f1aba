"""The rule kinds added for the per-release packs, on cases their rule examples do not show:
compound statements, CRLF, grouping, argument shapes, idempotence, option validation."""

from __future__ import annotations

import pytest
from packaging.specifiers import SpecifierSet

import latentsync_mps.port.rules  # noqa: F401  (importing the package registers every kind)
from latentsync_mps.pack.rule import Example, Rule
from latentsync_mps.port.rules.base import RuleError, RuleKind
from latentsync_mps.port.transform import run_rule


def kind(name: str, **options):
    rule = Rule(
        id="t",
        kind=name,
        summary="test",
        files=("**/*.py",),
        exclude=(),
        releases=SpecifierSet(""),
        expect=(),
        examples=(Example("", None, ""),),
        options=options,
        source="test.toml",
        profile="latentsync",
    )
    return RuleKind.registry[name](rule)


def rewrite(k, text: str, path: str = "x.py", module: str = "latentsync._lsync_port") -> str:
    out, changes = run_rule(k, text, path, module)
    again, more = run_rule(k, out, path, module)
    assert again == out and more == [], "a second run must change nothing"
    return out


def test_replace_statement_matches_a_compound_statement_and_keeps_comments_above():
    k = kind(
        "replace-statement",
        pattern='if device == "cpu":\n    self.detector = None\nelse:\n    self.detector = Detector(device)\n',
        replacement="self.detector = Detector(device)",
    )
    before = (
        "class P:\n"
        "    def __init__(self, device):\n"
        "        # the detector\n"
        "        if device == 'cpu':\n"
        "            self.detector = None  # none on the CPU\n"
        "        else:\n"
        "            self.detector = Detector(device)\n"
        "        self.ready = True\n"
    )
    after = rewrite(k, before)
    assert after == (
        "class P:\n"
        "    def __init__(self, device):\n"
        "        # the detector\n"
        "        self.detector = Detector(device)\n"
        "        self.ready = True\n"
    )


def test_replace_statement_keeps_crlf_and_the_trailing_comment():
    k = kind("replace-statement", pattern='raise ValueError("cuda only")', replacement="return -1")
    before = 'def f(d):\r\n    if d != "cuda":\r\n        raise ValueError("cuda only")  # why\r\n    return 0\r\n'
    assert rewrite(k, before) == 'def f(d):\r\n    if d != "cuda":\r\n        return -1  # why\r\n    return 0\r\n'


def test_replace_statement_validates_its_options():
    with pytest.raises(RuleError, match="not one Python statement"):
        kind("replace-statement", pattern="a = 1\nb = 2", replacement="pass")
    with pytest.raises(RuleError, match="is the pattern itself"):
        kind("replace-statement", pattern="a = 1", replacement="a  =  1")


def test_guard_statement_groups_runs_and_works_at_module_level():
    k = kind("guard-statement", targets=["torch.backends.cuda.", "torch.backends.cudnn."])
    before = (
        "import torch\n"
        "torch.backends.cudnn.benchmark = True\n"
        "torch.backends.cuda.matmul.allow_tf32 = True\n"
        "x = 1\n"
        "def f():\n"
        "    torch.backends.cudnn.allow_tf32 = False\n"
    )
    after = rewrite(k, before)
    assert after == (
        "import torch\n"
        "from latentsync import _lsync_port\n"
        "\n"
        'if _lsync_port.device_type() == "cuda":\n'
        "    torch.backends.cudnn.benchmark = True\n"
        "    torch.backends.cuda.matmul.allow_tf32 = True\n"
        "x = 1\n"
        "def f():\n"
        '    if _lsync_port.device_type() == "cuda":\n'
        "        torch.backends.cudnn.allow_tf32 = False\n"
    )


def test_guard_statement_follows_import_aliases():
    k = kind("guard-statement", targets=["torch.backends.cudnn."])
    after = rewrite(
        k, "from torch.backends import cudnn\ncudnn.benchmark = True\n", "nodes.py", ".latentsync._lsync_port"
    )
    assert "from .latentsync import _lsync_port" in after
    assert 'if _lsync_port.device_type() == "cuda":\n    cudnn.benchmark = True' in after


def test_helper_call_method_form_passes_the_receiver_first():
    k = kind("helper-call", methods={"self.vae.decode": "vae_decode"})
    after = rewrite(k, "out = self.vae.decode(latents, return_dict=False)[0]\nother = vae.decode(z)\n")
    assert "out = _lsync_port.vae_decode(self.vae, latents, return_dict=False)[0]" in after
    assert "other = vae.decode(z)" in after


def test_helper_call_function_form_follows_imports():
    k = kind("helper-call", functions={"torch.nn.functional.scaled_dot_product_attention": "sdpa"})
    after = rewrite(k, "from torch.nn.functional import scaled_dot_product_attention as attn\ny = attn(q, k, v)\n")
    assert "y = _lsync_port.sdpa(q, k, v)" in after
    with pytest.raises(RuleError):
        kind("helper-call", methods={"decode": "vae_decode"})


def test_cuda_type_check_either_side_and_quote_style():
    k = kind("cuda-type-check")
    after = rewrite(k, "a = x.device.type == 'cuda'\nb = \"cuda\" != y.device.type\nc = device.type == 'cuda'\n")
    assert after == "a = x.device.type != 'cpu'\nb = \"cpu\" == y.device.type\nc = device.type == 'cuda'\n"


def test_replace_value_positions():
    k = kind(
        "replace-value",
        names=["dtype", "weight_dtype"],
        values=["torch.float16"],
        replacement="_lsync_port.dtype()",
        to_positional=True,
    )
    before = (
        "import torch\n"
        "dtype = torch.float16\n"
        "weight_dtype: torch.dtype = torch.float16\n"
        "x = x.to(torch.float16)\n"
        "y = y.to(device, torch.float16)\n"
        "z = torch.zeros(3, dtype=torch.float32)\n"
    )
    after = rewrite(k, before)
    assert "dtype = _lsync_port.dtype()\n" in after
    assert "weight_dtype: torch.dtype = _lsync_port.dtype()" in after
    assert "x = x.to(_lsync_port.dtype())" in after
    assert "y = y.to(device, torch.float16)" in after  # only the first argument of .to()
    assert "dtype=torch.float32" in after
    with pytest.raises(RuleError, match="is one of the values"):
        kind("replace-value", names=["fp16"], values=["True"], replacement="True")


def test_requirement_replace_specifier_placeholder_and_only_if():
    k = kind(
        "requirement-replace",
        package="av",
        only_if="<12",
        replacement=["av{specifier}; platform_system != 'Darwin'", "av>=12; platform_system == 'Darwin'"],
    )
    text = "av==11.0.0  # eval\nav==12.1.0\nav\nav<12\n"
    out, changes = run_rule(k, text, "requirements.txt", "latentsync._lsync_port")
    assert out == (
        'av==11.0.0; platform_system != "Darwin"  # eval\nav>=12; platform_system == "Darwin"\nav==12.1.0\nav\nav<12\n'
    )
    assert len(changes) == 1
    assert run_rule(k, out, "requirements.txt", "latentsync._lsync_port") == (out, [])


@pytest.mark.parametrize(
    "k",
    [
        kind("requirement-marker", packages=["xformers"], marker='platform_system != "Darwin"'),
        kind("requirement-replace", package="xformers", replacement=["xformers; platform_system != 'Darwin'"]),
    ],
    ids=["requirement-marker", "requirement-replace"],
)
def test_a_marker_joined_to_an_or_keeps_the_parentheses(k):
    """`a or b` joined with `c` is `(a or b) and c`: without the parentheses `and` binds first, and
    the package would still install on a Mac wherever `a` holds."""
    from packaging.requirements import Requirement

    text = 'xformers==0.0.20; python_version < "3.10" or implementation_name == "pypy"\n'
    out, changes = run_rule(k, text, "requirements.txt", "latentsync._lsync_port")
    assert len(changes) == 1
    marker = Requirement(out.strip()).marker
    mac = {"platform_system": "Darwin", "python_version": "3.9", "implementation_name": "cpython"}
    assert marker.evaluate(mac) is False, str(marker)  # python < 3.10 holds; still never on a Mac
    assert marker.evaluate(mac | {"platform_system": "Linux"}) is True
    assert marker.evaluate(mac | {"platform_system": "Linux", "python_version": "3.11"}) is False


GUARD = 'if [ "$(uname)" != "Darwin" ]; then {line}; fi'


def test_shell_line_replace_keeps_indentation_crlf_and_a_last_line_without_ending():
    k = kind("shell-line-replace", pattern="sudo apt(-get)? .*install .*", replacement=GUARD)
    text = "#!/bin/bash\r\nif true; then\r\n  sudo apt-get install -y libgl1\r\nfi\r\nsudo apt -y install libgl1"
    out = rewrite(k, text, "setup_env.sh")
    assert out == (
        "#!/bin/bash\r\nif true; then\r\n"
        '  if [ "$(uname)" != "Darwin" ]; then sudo apt-get install -y libgl1; fi\r\n'
        'fi\r\nif [ "$(uname)" != "Darwin" ]; then sudo apt -y install libgl1; fi'
    )
    assert rewrite(k, "echo sudo apt install x\n# sudo apt install x\n", "setup_env.sh").count("uname") == 0


def test_shell_notes_stack_above_one_line_and_are_not_repeated():
    first = kind("shell-note", pattern=r"python -m scripts\.inference.*", lines=["# one", "# two"])
    second = kind("shell-note", pattern=r"python -m scripts\.inference.*", lines=["# three"])
    text = "#!/bin/bash\n# upstream's own comment\n    python -m scripts.inference \\\n    --x 1"
    out, _ = run_rule(first, text, "inference.sh", "latentsync._lsync_port")
    out, _ = run_rule(second, out, "inference.sh", "latentsync._lsync_port")
    assert out == (
        "#!/bin/bash\n# upstream's own comment\n    # one\n    # two\n    # three\n"
        "    python -m scripts.inference \\\n    --x 1"
    )
    for k in (first, second):  # each finds its lines in the block above: nothing added twice
        assert run_rule(k, out, "inference.sh", "latentsync._lsync_port") == (out, [])
    # A last line without an ending takes the file's ending for the note.
    assert rewrite(second, "a\r\npython -m scripts.inference", "x.sh") == "a\r\n# three\r\npython -m scripts.inference"


def test_shell_kinds_validate_their_options():
    with pytest.raises(RuleError, match="must contain"):
        kind("shell-line-replace", pattern="sudo .*", replacement="true")
    with pytest.raises(RuleError, match="not a regular expression"):
        kind("shell-line-replace", pattern="sudo (", replacement=GUARD)
    with pytest.raises(RuleError, match="starting with '#'"):
        kind("shell-note", pattern="python .*", lines=["echo hi"])
    with pytest.raises(RuleError, match="unknown option"):
        kind("shell-note", pattern="python .*", lines=["# hi"], extra=1)


def test_upcast_call_wraps_once_and_binds_a_non_trivial_input_once():
    # No rule of ours uses upcast-call since interpolate-float32 goes through the helper; rule packs
    # of one's own (LSYNC_PORT_PATCHES) still can, so its contract is tested here.
    k = kind("upcast-call", calls=["torch.nn.functional.interpolate"], dtype="torch.float32")
    before = (
        "import torch\n"
        "import torch.nn.functional as F\n"
        "y = F.interpolate(x, scale_factor=2.0, mode='nearest')\n"
        "z = F.interpolate(f(x), size=4)\n"
    )
    after = rewrite(k, before)  # rewrite() also checks that a second run changes nothing
    assert "F.interpolate(x.to(torch.float32), scale_factor=2.0, mode='nearest').to(x.dtype)" in after
    assert "(_lsync_in := f(x))" in after and after.count("f(x)") == 1


DETECTION_TEXTS = {"finding": "float64", "severity": "warning", "why": "w", "fix": "f"}


def test_detection_kinds_validate_their_options():
    with pytest.raises(RuleError, match="'guard' is only for pinned = false"):
        kind(
            "report-kernel-pin", callee=["a.b"], kernels=["K"], fallback="M", pinned=True, guard="x", **DETECTION_TEXTS
        )
    with pytest.raises(RuleError, match="not a Python expression"):
        kind(
            "report-cuda-reference", prefixes=["torch.cuda."], texts="torch-cuda.toml", guard="if", finding="torch-cuda"
        )
    with pytest.raises(RuleError, match="ends with a dot"):
        kind("report-cuda-reference", prefixes=["torch.cuda"], texts="torch-cuda.toml", finding="torch-cuda")
    with pytest.raises(RuleError, match="'wrap' must be"):
        kind("report-unwrapped-call", callee="f.g", modes=["nearest"], wrap="float32", **DETECTION_TEXTS)
    with pytest.raises(RuleError, match="'names'"):
        kind("report-dtype-pin", names=[], positions=["dtype"], **DETECTION_TEXTS)
    with pytest.raises(RuleError, match="missing option 'why'"):
        kind("report-left-out-branch", literal="cpu", names=["device"], finding="cpu-branch", severity="error", fix="f")
    with pytest.raises(RuleError, match="unknown option"):
        kind("report-raise-unless", literal="cuda", colour="blue", **DETECTION_TEXTS)


def test_detection_needles_come_from_the_options():
    assert kind(
        "report-cuda-reference",
        names=["torch.cuda"],
        prefixes=["torch.backends.cudnn."],
        texts="torch-cuda.toml",
        finding="torch-cuda",
    ).needles() == ("cuda", "cudnn")
    left_out = kind("report-left-out-branch", literal="cpu", names=["device"], **DETECTION_TEXTS)
    assert left_out.needles() == ('"cpu', "'cpu")
    assert left_out.may_match(b'if device == "cpu":\n    self.x = None\n')
    assert not left_out.may_match(b'if device == "cpu":\n    self.x = 1\n')  # no `= None`: not parsed for it
    vae = kind("report-call", method=["encode", "decode"], receiver="vae", **DETECTION_TEXTS)
    assert vae.needles() == ("vae",)


def test_ffmpeg_command_keeps_prefixes_escapes_braces_and_leaves_bytes():
    ffmpeg = kind("ffmpeg-command")
    before = (
        "import subprocess\n"
        "subprocess.run(r'ffmpeg -i C:\\in.mp4 -vf \"scale={w}:-1\" out.mp4', shell=True)\n"
        'cmd = ("ffmpeg -y " f"-i {src}")\n'
        'raw = b"ffmpeg -version"\n'
        'run(cmd=("ffmpeg"))\n'  # ffmpeg-python's cmd= names the program as a string too
    )
    after = rewrite(ffmpeg, before)
    assert "fr'{_lsync_port.ffmpeg_shell()} -i C:\\in.mp4 -vf \"scale={{w}}:-1\" out.mp4'" in after
    assert 'cmd = (f"{_lsync_port.ffmpeg_shell()} -y " f"-i {src}")' in after
    assert 'raw = b"ffmpeg -version"' in after
    assert "run(cmd=_lsync_port.ffmpeg())" in after
    compile(after, "x.py", "exec")


def test_drop_unused_import_carries_comments_and_keeps_what_is_used():
    drop = kind("drop-unused-import", modules=["torchaudio"], anywhere=True)
    before = (
        "import os\n"
        "# audio\n"
        "import torchaudio\n"
        "x = 1; import torchaudio.functional as taf\n"
        "def f():\n"
        "    import torchaudio\n"
        "    return os.sep\n"
    )
    assert rewrite(drop, before) == "import os\n# audio\nx = 1\ndef f():\n    return os.sep\n"
    used = "import torchaudio\n\ndef f():\n    import torchaudio as ta\n    return torchaudio.info('a.wav')\n"
    assert rewrite(drop, used) == used.replace("    import torchaudio as ta\n", "")
    top = kind("drop-unused-import", modules=["torchaudio"])  # top level only, by default
    inner = "def f():\n    import torchaudio\n    return 1\n"
    assert rewrite(top, inner) == inner
    with pytest.raises(RuleError, match="'modules'"):
        kind("drop-unused-import", modules=[])


def test_path_above_counts_levels_and_validates():
    from latentsync_mps.port.rulecheck import report_lines

    above = kind("report-path-above", anchor="folder_paths.__file__", levels=2, **DETECTION_TEXTS)
    text = (
        "import os\n"
        "a = os.path.dirname(os.path.dirname(os.path.dirname(folder_paths.__file__)))\n"  # three up: once
        "b = os.path.dirname(os.path.realpath(folder_paths.__file__))\n"  # the root itself
        "c = Path(folder_paths.__file__).parents[0]\n"
        "d = Path(folder_paths.__file__).parents[2]\n"
    )
    assert report_lines(above, text, "nodes.py") == [2, 5]
    assert above.needles() == ("folder_paths",)
    with pytest.raises(RuleError, match="'levels'"):
        kind("report-path-above", anchor="folder_paths.__file__", levels=0, **DETECTION_TEXTS)
