"""Finders: what in a tree is still tied to CUDA, with file:line, why it breaks on a Mac and the fix.

Two sources: the detection-only rules in patches/findings/ (data: finding kind, severity, why,
fix, examples; rules/report.py), and `PythonFinder` below for the kinds not yet moved there.
`scan` shows these for a whole tree; `apply` runs the same finders over its result and calls what
is left on the inference path *residue*. Severity:
  error    breaks, silently skips the GPU, or computes differently on a Mac (counted as residue)
  warning  may break depending on data or size (float64 arrays, memory on MPS, sdist builds)

Kinds (see KINDS for the one-line meaning of each):
  cuda-literal, cuda-method, torch-cuda, onnx-cuda-provider    CUDA named where a device is chosen
  fp16-hardcoded, fp16-default, interpolate-fp16               precision that only CUDA handles well
  xformers, sdpa-pin                                           attention kernels that exist on NVIDIA only
  cpu-branch, cuda-only-check, cuda-branch, cuda-flag          control flow that treats only CUDA as a GPU
  float64, mps-attention, mps-vae                              (warnings) data- and size-dependent
  cuda-index, no-mac-wheel, sdist-only                         requirement files
"""

from __future__ import annotations

import fnmatch
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import libcst as cst
import libcst.matchers as m
from libcst.metadata import PositionProvider

from .rewrite import run_pass
from .rules.base import FileContext, expression_shape
from .rules.cuda_type_check import cuda_type_comparison
from .rules.device_literal import cuda_fstring, cuda_literal
from .rules.finding import Finding, finding_at
from .rules.names import ImportedNameProvider
from .rules.report import DetectionRuleKind, PythonDetectionKind, RequirementReport

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


KINDS = {
    "cuda-literal": 'a "cuda" device string where a device is chosen',
    "cuda-method": "a .cuda() move",
    "torch-cuda": "a torch.cuda.* call",
    "onnx-cuda-provider": "an ONNX Runtime provider list with CUDA only",
    "fp16-hardcoded": "float16 pinned where a dtype is chosen",
    "fp16-default": "a half-precision switch that defaults to on for every GPU",
    "interpolate-fp16": "nearest F.interpolate without a float32 round trip",
    "xformers": "the xformers attention switch, not limited to CUDA",
    "sdpa-pin": "scaled-dot-product attention pinned to a CUDA-only kernel",
    "cpu-branch": 'a component left out when the device is "cpu"',
    "cuda-only-check": "a device check that raises for everything but CUDA",
    "cuda-branch": "a tensor treated as on the GPU only when on CUDA",
    "cuda-flag": "a CUDA backend flag set for every device",
    "pin-memory": "page-locked host memory, which only CUDA transfers use",
    "float64": "float64 that may reach the device",
    "mps-attention": "attention whose score matrix is one buffer on MPS",
    "mps-vae": "a whole batch through the VAE at once on MPS",
    "cuda-index": "a CUDA wheel index",
    "no-mac-wheel": "a requirement with no macOS arm64 wheel",
    "sdist-only": "a requirement that builds from source on a Mac",
}

# What each name of torch's CUDA namespaces does on a Mac, and the fix: data, in
# patches/torch-cuda.toml (loaded when a finder first reports one).
CUDA_TIES_FILE = "torch-cuda.toml"
_CUDA_FLAG_PREFIXES = ("torch.backends.cuda.", "torch.backends.cudnn.")


@dataclass(frozen=True)
class CudaTie:
    kind: str
    severity: str
    why: str
    fix: str


@functools.cache
def _cuda_ties() -> tuple[dict[str, CudaTie], list[tuple[tuple[str, ...], CudaTie]], CudaTie]:
    """(per name, per shape, default) from torch-cuda.toml: the rule packs' own, else the bundled one."""
    from .resources import bundled_patches_dir, patches_dir

    path = patches_dir() / CUDA_TIES_FILE
    if not path.exists():  # a rule pack of one's own (LSYNC_PORT_PATCHES) without the file
        path = bundled_patches_dir() / CUDA_TIES_FILE
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    default = _tie(data["default"], None)
    shapes = [(tuple(entry["match"]), _tie(entry, default)) for entry in data.get("shape", [])]
    apis = {name: _tie(entry, default) for name, entry in data.get("api", {}).items()}
    return apis, shapes, default


def _tie(entry: dict, default: CudaTie | None) -> CudaTie:
    base = default or CudaTie("torch-cuda", "error", "", "")
    return CudaTie(entry.get("kind", base.kind), entry.get("severity", base.severity), entry["why"], entry["fix"])


def cuda_tie(name: str) -> CudaTie:
    """What to say about a name under torch.cuda / torch.backends.cuda / .cudnn."""
    apis, shapes, default = _cuda_ties()
    if name in apis:
        return apis[name]
    for patterns, tie in shapes:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return tie
    return default


def _cuda_api(name: str) -> bool:
    """A name in torch's CUDA namespaces: torch.cuda (and below), torch.backends.cuda, .cudnn."""
    return name == "torch.cuda" or name.startswith(("torch.cuda.", *_CUDA_FLAG_PREFIXES))


_SDPA_PINS = ("torch.nn.attention.sdpa_kernel", "torch.backends.cuda.sdp_kernel")
_CUDA_KERNELS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "enable_flash", "enable_mem_efficient")
_CUDA_GUARD = expression_shape('_lsync_port.device_type() == "cuda"')
_DTYPE_NAMES = frozenset({"dtype", "torch_dtype", "weight_dtype"})
_DEVICE_KEYWORDS = ("device", "map_location", "device_type")
# Callees whose string arguments are text, not a device: messages, and string tests of a device.
_TEXT_CALLEES = frozenset(
    {
        "print",
        "debug",
        "info",
        "warning",
        "warn",
        "error",
        "exception",
        "critical",
        "log",
        "write",
        "echo",
        "format",
        "startswith",
        "endswith",
        "replace",
        "split",
        "rsplit",
        "partition",
        "join",
        "find",
        "index",
        "count",
        "strip",
    }
)
_FP16 = frozenset({"torch.float16", "torch.half"})
_INTERPOLATE = "torch.nn.functional.interpolate"
_FLOAT64_WHY = "MPS has no float64: 'Cannot convert a MPS Tensor to float64 dtype'"

# A file with none of these cannot hold what PythonFinder reports (it is then not parsed for it).
PY_NEEDLES = (
    b"cuda",
    b"CUDA",
    b"cudnn",  # torch.backends.cudnn.* flags: "cudnn" does not contain "cuda"
    b"float64",
    b"double",
    b"float16",
    b"half",
    b"fp16",
    b"xformers",
    b"sdpa_kernel",
    b"sdp_kernel",
    b"interpolate",
    b"scaled_dot_product_attention",
    b"cpu",
    b"vae",
    b"from_numpy",
    b"pin_memory",
)


class PythonFinder(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (PositionProvider, ImportedNameProvider)

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.found: list[Finding] = []
        self._empty = cst.Module(body=[])
        self._guards: list[bool] = []  # per enclosing `if`: is its test the CUDA-only guard?
        self._choices: list[bool] = []  # per enclosing `a if test else b`: does the test ask for mps?
        self._imports = 0  # inside an import statement: names there are bindings, not uses
        self._seen: set[int] = set()  # Name/Attribute nodes already inside a reported reference

    def _add(self, node: cst.CSTNode, kind: str, severity: str, why: str, fix: str) -> None:
        self.found.append(finding_at(self, self.path, node, kind, severity, why, fix))

    def _qualified(self, node: cst.CSTNode) -> set[str]:
        return {q.name for q in self.get_metadata(ImportedNameProvider, node, set())}

    def _code(self, node: cst.CSTNode) -> str:
        return self._empty.code_for_node(node)

    # -- calls ------------------------------------------------------------------------------

    def visit_Call(self, node: cst.Call) -> None:
        names = self._qualified(node.func)
        self._string_arguments(node, names)
        if names & set(_SDPA_PINS):
            self._mark(node.func)
            if not self._sdpa_pin(node) and not any(self._guards):
                tie = cuda_tie("torch.backends.cuda.sdp_kernel")  # a backend switch, pinned to nothing
                self._add(node, tie.kind, tie.severity, f"an attention-backend switch {tie.why}", tie.fix)
            return
        if self._cuda_reference(node, node.func, names):
            return
        if _INTERPOLATE in names:
            self._interpolate(node)
        # `.cuda()`, `.pin_memory()` and an unconditional xformers switch: report-call rules in
        # patches/findings/python.toml.
        if m.matches(node, m.Call(func=m.Attribute(attr=m.Name("get")), args=[m.Arg(), m.Arg()])):
            key, default = node.args[0].value, node.args[1].value
            if (
                m.matches(key, m.SimpleString())
                and key.evaluated_value == "fp16"
                and m.matches(default, m.Name("True"))
            ):
                self._fp16_default(node.args[1].value)

    def _sdpa_pin(self, node: cst.Call) -> bool:
        code = self._code(node)
        pinned = any(k in code for k in _CUDA_KERNELS) and "MATH" not in code
        if "enable_math=False" in code.replace(" ", ""):
            pinned = True
        if pinned:
            self._add(
                node,
                "sdpa-pin",
                "error",
                "attention pinned to a CUDA-only kernel: on mps and cpu it fails with 'No available kernel'",
                "_lsync_port.sdpa_kernel(...) keeps the pin on CUDA and drops it elsewhere",
            )
        return pinned

    # -- references to torch.cuda and the CUDA backends ---------------------------------------

    def _mark(self, node: cst.BaseExpression) -> None:
        """`node` and the names inside its attribute chain are part of one reported reference."""
        while True:
            self._seen.add(id(node))
            if not isinstance(node, cst.Attribute):
                return
            node = node.value

    def _cuda_reference(self, report: cst.CSTNode, name_node: cst.BaseExpression, names: set[str]) -> bool:
        """Report any use of a name under torch.cuda or torch.backends.cuda/cudnn: every public
        function, type and module there, called or not (complete by construction: the names are
        matched by prefix, so a torch release that adds one is covered)."""
        if self._imports or id(name_node) in self._seen:
            return False
        name = next((n for n in sorted(names) if _cuda_api(n)), None)
        if name is None:
            return False
        self._mark(name_node)
        if any(self._guards):
            return True  # only runs on CUDA
        tie = cuda_tie(name)
        self._add(report, tie.kind, tie.severity, f"{name} {tie.why}", tie.fix)
        return True

    def visit_Name(self, node: cst.Name) -> None:
        self._cuda_reference(node, node, self._qualified(node))

    def visit_Import(self, node: cst.Import) -> None:
        self._imports += 1

    def leave_Import(self, original_node: cst.Import) -> None:
        self._imports -= 1

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        self._imports += 1

    def leave_ImportFrom(self, original_node: cst.ImportFrom) -> None:
        self._imports -= 1

    def _string_arguments(self, node: cst.Call, names: set[str]) -> None:
        """A "cuda" device string, or the name of a CUDA tensor type, in any argument of a call
        (`torch.autocast("cuda")`, `set_default_device("cuda")`, `Encoder(256, "cuda:0")`),
        except messages and string tests. Keyword device positions and the first argument of
        .to()/torch.device() are checked where they are rewritten (visit_Arg, leave_Call)."""
        callee = node.func.attr.value if isinstance(node.func, cst.Attribute) else getattr(node.func, "value", "")
        if callee in _TEXT_CALLEES or str(callee).endswith(("Error", "Exception", "Warning")):
            return
        if callee == "cuda":
            return  # `.cuda("cuda:1")`: one finding, cuda-method, for the call and its device
        if "_lsync_port" in self._code(node.func):
            return  # the helper takes upstream's CUDA spelling as the preferred CUDA device: ported
        is_move = callee == "to" or "torch.device" in names
        for index, arg in enumerate(node.args):
            if arg.keyword is not None and arg.keyword.value in _DEVICE_KEYWORDS:
                continue
            if index == 0 and is_move and arg.keyword is None:
                continue
            value = arg.value
            if cuda_literal(value) is not None or cuda_fstring(value):
                self._add(value, "cuda-literal", "error", "a hard-coded CUDA device", "_lsync_port.device()")
            elif isinstance(value, cst.SimpleString) and str(value.evaluated_value).startswith("torch.cuda."):
                tie = cuda_tie(str(value.evaluated_value))
                self._add(value, tie.kind, "error", f"{value.evaluated_value} {tie.why}", tie.fix)

    def _interpolate(self, node: cst.Call) -> None:
        position = next((i for i, a in enumerate(node.args) if a.keyword is None or a.keyword.value == "input"), None)
        if position is None:
            return
        value = node.args[position].value
        mode = next((a.value for a in node.args if a.keyword is not None and a.keyword.value == "mode"), None)
        if mode is not None and not (isinstance(mode, cst.SimpleString) and mode.evaluated_value == "nearest"):
            return  # the black-frame bug is nearest upsampling (the default mode)
        upcast = m.Call(
            func=m.Attribute(attr=m.Name("to")),
            args=[m.Arg(m.Attribute(value=m.Name("torch"), attr=m.Name("float32")))],
        )
        if not m.matches(value, upcast):
            self._add(
                node,
                "interpolate-fp16",
                "error",
                "float16 nearest upsampling on MPS gave black, masked frames (LatentSync issue 48)",
                "F.interpolate(x.to(torch.float32), ...).to(x.dtype): free on float32 inputs",
            )

    def _fp16_default(self, node: cst.CSTNode) -> None:
        self._add(
            node,
            "fp16-default",
            "error",
            "half precision on by default: upstream only turns it off on the CPU, so mps runs it in float16",
            "_lsync_port.whisper_fp16(device): float16 on CUDA only",
        )

    def _fp16(self, node: cst.CSTNode) -> None:
        if self._qualified(node) & _FP16:
            self._add(
                node,
                "fp16-hardcoded",
                "error",
                "float16 pinned regardless of the device: no LATENTSYNC_DTYPE override, and float16 on the CPU",
                "_lsync_port.dtype() (or _lsync_port.restore_dtype() for the face warp)",
            )

    # -- device and dtype positions ---------------------------------------------------------

    def visit_IfExp(self, node: cst.IfExp) -> None:
        self._choices.append("mps" in self._code(node.test))

    def leave_IfExp(self, original_node: cst.IfExp) -> None:
        self._choices.pop()

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self._seen.add(id(node.attr))  # `x.empty_cache`: an attribute name, not an imported one
        names = self._qualified(node)
        if self._cuda_reference(node, node, names):
            return
        # `.is_cuda`: rule report-is-cuda in patches/findings/python.toml.
        if names & {"torch.float64", "torch.double"} and not any(self._choices):  # `x if is_mps else float64`
            self._add(node, "float64", "warning", _FLOAT64_WHY, "torch.float32 where the tensor reaches the device")

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is None:
            return
        name = node.keyword.value
        if name in _DEVICE_KEYWORDS:
            self._literal(node.value)
        elif name in _DTYPE_NAMES:
            self._fp16(node.value)
        elif name == "fp16" and m.matches(node.value, m.Name("True")):
            self._fp16_default(node.value)

    def visit_Param(self, node: cst.Param) -> None:
        if node.default is None:
            return
        if node.name.value == "device":
            self._literal(node.default)
        elif node.name.value in _DTYPE_NAMES:
            self._fp16(node.default)
        elif node.name.value == "fp16" and m.matches(node.default, m.Name("True")):
            self._fp16_default(node.default)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is None or not isinstance(node.target, cst.Name):
            return
        if node.target.value == "fp16" and m.matches(node.value, m.Name("True")):
            self._fp16_default(node.value)
        elif node.target.value in _DTYPE_NAMES:
            self._fp16(node.value)

    def visit_Assign(self, node: cst.Assign) -> None:
        if all(m.matches(t.target, m.Name("device")) for t in node.targets):
            self._literal(node.value)
        for target in node.targets:
            self._flag(node, target.target)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._flag(node, node.target)

    def _flag(self, statement: cst.CSTNode, target: cst.BaseExpression) -> None:
        if not any(name.startswith(_CUDA_FLAG_PREFIXES) for name in self._qualified(target)):
            return
        self._mark(target)  # reported here as a flag, not again as a reference
        if not any(self._guards):
            self._add(
                statement,
                "cuda-flag",
                "error",
                "a CUDA backend flag (TF32, cuDNN): it does nothing on a Mac, where the code around it "
                "assumes an NVIDIA GPU",
                'set it only `if _lsync_port.device_type() == "cuda":`',
            )

    def leave_Call(self, node: cst.Call) -> None:
        is_move = m.matches(node.func, m.Attribute(attr=m.Name("to"))) or "torch.device" in self._qualified(node.func)
        if is_move and node.args and node.args[0].keyword is None:
            self._literal(node.args[0].value)
            if m.matches(node.func, m.Attribute(attr=m.Name("to"))):
                self._fp16(node.args[0].value)
        if m.matches(node.func, m.Attribute(attr=m.Name("to"))):
            self._numpy_to_device(node)

    def _numpy_to_device(self, node: cst.Call) -> None:
        """`torch.from_numpy(a).to(device)` with no dtype: numpy arrays are float64 by default."""
        receiver = node.func.value  # type: ignore[attr-defined]
        if not (isinstance(receiver, cst.Call) and "torch.from_numpy" in self._qualified(receiver.func)):
            return
        keywords = {a.keyword.value for a in node.args if a.keyword is not None}
        positional = [a for a in node.args if a.keyword is None]
        if "dtype" in keywords or len(positional) > 1 or not node.args:
            return
        inner = self._code(receiver)
        if "float32" in inner or "uint8" in inner:
            return
        self._add(
            node,
            "float64",
            "warning",
            "a numpy array moved to the device as it is: if it is float64 (numpy's default), MPS refuses it",
            ".to(device, dtype=torch.float32)",
        )

    def _literal(self, value: cst.BaseExpression) -> None:
        if cuda_literal(value) is not None or cuda_fstring(value):
            self._add(value, "cuda-literal", "error", "a hard-coded CUDA device", "_lsync_port.device()")

    def visit_Comparison(self, node: cst.Comparison) -> None:
        if cuda_type_comparison(node):
            self._add(
                node,
                "cuda-branch",
                "error",
                "treats a tensor as on the GPU only when it is on CUDA: MPS tensors skip this branch",
                'compare with "cpu" instead (`x.device.type != "cpu"`)',
            )

    # -- control flow -----------------------------------------------------------------------

    def visit_If(self, node: cst.If) -> None:
        test = self._code(node.test)
        self._guards.append(expression_shape(test) == _CUDA_GUARD)
        self._xformers_switch(node)
        self._cpu_branch(node)
        self._cuda_only_check(node)

    def leave_If(self, original_node: cst.If) -> None:
        self._guards.pop()

    def _xformers_switch(self, node: cst.If) -> None:
        enables = m.findall(
            node.body, m.Call(func=m.Attribute(attr=m.Name("enable_xformers_memory_efficient_attention")))
        )
        if enables and "_lsync_port" not in self._code(node.test):
            self._add(
                node.test,
                "xformers",
                "error",
                "xformers has no Mac wheels and its attention runs on NVIDIA GPUs only",
                "call it only `if _lsync_port.xformers_available():`",
            )

    def _cpu_branch(self, node: cst.If) -> None:
        test = node.test
        if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1):
            return
        operator, right = test.comparisons[0].operator, test.comparisons[0].comparator
        if not isinstance(operator, cst.Equal | cst.NotEqual):
            return
        sides = (test.left, right)
        cpu = [s for s in sides if isinstance(s, cst.SimpleString) and s.evaluated_value == "cpu"]
        device = [s for s in sides if m.matches(s, m.Name("device") | m.Attribute(attr=m.Name("device")))]
        if not (cpu and device):
            return
        none_to_self = m.Assign(targets=[m.AssignTarget(m.Attribute(value=m.Name("self")))], value=m.Name("None"))
        branches = [node.body] + ([node.orelse.body] if isinstance(node.orelse, cst.Else) else [])
        if any(m.findall(branch, none_to_self) for branch in branches):
            self._add(
                test,
                "cpu-branch",
                "error",
                'on "cpu" a component is left out (None) and the first frame fails (NotImplementedError, '
                "or 'NoneType' has no attribute)",
                "build it on every device: _lsync_port.runs_face_detection(device)",
            )

    def _cuda_only_check(self, node: cst.If) -> None:
        test = node.test
        if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1):
            return
        if not isinstance(test.comparisons[0].operator, cst.NotEqual) or "_lsync_port" in self._code(test):
            return  # a ported check (`_lsync_port.device_type() != "cuda"`) means CUDA only on purpose
        sides = (test.left, test.comparisons[0].comparator)
        if not any(isinstance(s, cst.SimpleString) and s.evaluated_value == "cuda" for s in sides):
            return
        first = node.body.body[0] if isinstance(node.body, cst.IndentedBlock) and node.body.body else None
        if isinstance(first, cst.SimpleStatementLine) and isinstance(first.body[0], cst.Raise):
            self._add(
                first.body[0],
                "cuda-only-check",
                "error",
                "raises for every device but CUDA, mps and cpu included",
                "answer for the device instead (e.g. _lsync_port.onnx_ctx_id(device))",
            )


@functools.cache
def _detectors_of(root: str) -> tuple[DetectionRuleKind, ...]:
    from .ruleset import load

    return tuple(load(Path(root)).detectors())


def default_detectors() -> tuple[DetectionRuleKind, ...]:
    """The detection-only rules of the rule packs in use (LSYNC_PORT_PATCHES, else the bundled)."""
    from .resources import patches_dir

    return _detectors_of(str(patches_dir()))


def python_finders(
    path: str, data: bytes, detectors: Sequence[DetectionRuleKind] | None = None
) -> list[cst.CSTVisitor]:
    """The visitors that find what is CUDA-only in one Python file: the detection-only rules
    (patches/findings/; default: the pack's) that can match it, and PythonFinder for the kinds
    not yet moved there."""
    if detectors is None:
        detectors = default_detectors()
    finders: list[cst.CSTVisitor] = [
        d.finder(path)
        for d in detectors
        if isinstance(d, PythonDetectionKind)
        and d.rule.covers_path(path)
        and any(n.encode() in data for n in d.needles())
    ]
    if any(needle in data for needle in PY_NEEDLES):
        finders.insert(0, PythonFinder(path))
    return finders


def find_in_python(path: str, data: bytes, detectors: Sequence[DetectionRuleKind] | None = None) -> list[Finding]:
    """The finders alone over one file: the same single pass apply runs, with no rules."""
    finders = python_finders(path, data, detectors)
    if not finders:
        return []
    return sorted(run_pass(data, [], FileContext(path, ""), finders).residue, key=lambda f: f.line)


def find_in_requirements(path: str, text: str, detectors: Sequence[DetectionRuleKind] | None = None) -> list[Finding]:
    """The requirement-file rules of `detectors` (patches/findings/; default: the pack's), line by line."""
    if detectors is None:
        detectors = default_detectors()
    rules = [d for d in detectors if isinstance(d, RequirementReport) and d.rule.covers_path(path)]
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for rule in rules:
            finding = rule.report(path, number, line)
            if finding is not None:
                found.append(finding)
                break  # one finding a line
    return found
