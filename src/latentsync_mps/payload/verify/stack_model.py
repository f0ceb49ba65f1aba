"""The host stack, as the tree's code sees it: only what the modelled Mac set-up has (verify's child side).

Standalone (stdlib only): harness.py loads it by path in the tree's interpreter and calls
`install(tree, model)` before any of the tree's modules are imported, on cpu and mps-sim alike. The
model comes from lsync-port's stacks.toml (`Stack.child_model`), facts read from the stack's wheels:

- `keep`: {module: its public names in the stack's release}. Any other public name of the installed
  module is taken off it: the tree's code gets AttributeError at its call site, as on that Mac
  (torchvision.io.write_video on a stack with torchvision 0.26+). Code outside the tree still gets
  it (the installed libraries' own internals). A name the stack has and the installed release lacks
  cannot be provided: `notes` says so.
- `block_modules`: distributions the stack does not have (torchcodec on ComfyUI Desktop): importing
  them fails as it would there.
- `raise`: {"torchaudio.save": {"type", "message"}}: functions that raise there (torchaudio's
  load/save without torchcodec raise ImportError "TorchCodec is required ...").
- `ffmpeg_on_path` false: for the tree's code (any call with a frame of the tree on the stack),
  `shutil.which("ffmpeg")` is None and starting a bare `ffmpeg` fails as it does with no such
  program on PATH (FileNotFoundError; status 127 through a shell). An absolute path still runs.
- `needs_torchcodec`: the stack's torchaudio load/save work through torchcodec and FFmpeg's
  libraries; where this interpreter cannot load them, the call fails with StackNotModelled, which
  says what to install here, never as if the Mac had failed.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import os
import shlex
import shutil
import subprocess
import sys

SHELL_NOT_FOUND = 127  # a shell's status for a command not on PATH

NOTES: list[str] = []
_INSIDE = ""


class StackNotModelled(RuntimeError):
    """This interpreter cannot do what the modelled stack can: an environment gap here, not the Mac's failure."""


def _tree_on_stack() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if os.path.realpath(frame.f_code.co_filename).startswith(_INSIDE):
            return True
        frame = frame.f_back
    return False


def _called_from_tree() -> bool:
    return os.path.realpath(sys._getframe(2).f_code.co_filename).startswith(_INSIDE)


class _Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, names, stack):
        self.names, self.stack = set(names), stack

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (stack {self.stack} has none)", name=fullname)
        return None


def _keep_only(module_name: str, keep: list[str], stack: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:  # not installed here: the tree's own import says so, if it imports it
        return
    except Exception as error:  # broken here
        NOTES.append(f"{module_name} not importable here ({type(error).__name__}: {error}): not modelled")
        return
    keep_set = set(keep)
    public = {n for n, v in vars(module).items() if not n.startswith("_") and type(v).__name__ != "module"}
    hidden = {name: vars(module).pop(name) for name in sorted(public - keep_set)}
    absent = sorted(n for n in keep_set - set(vars(module)) if not n.startswith("_") and not hasattr(module, n))
    if absent:
        NOTES.append(f"{module_name}: {', '.join(absent)} of stack {stack} not provided by the release installed here")
    previous = vars(module).get("__getattr__")

    def __getattr__(name, hidden=hidden, previous=previous):
        if name in hidden and not _called_from_tree():
            return hidden[name]
        if name in hidden:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r} (stack {stack} has none)")
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    module.__getattr__ = __getattr__


def _raise_instead(target: str, how: dict, stack: str) -> None:
    module_name, _, name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception:  # not installed here: the tree's import fails on its own
        return
    kind = getattr(builtins, how.get("type", "ImportError"), ImportError)
    message = how["message"]

    def unavailable(*args, **kwargs):
        raise kind(message)

    unavailable.__name__ = name
    unavailable.__qualname__ = name
    unavailable.__doc__ = f"{target} as on stack {stack}: it raises {kind.__name__}({message!r})"
    setattr(module, name, unavailable)


def _needs_torchcodec(stack: str) -> None:
    """The stack's torchaudio load/save work there (torchcodec + FFmpeg libraries); here they must too."""
    try:
        import torchaudio
    except Exception:
        return
    for name in ("load", "save"):
        original = getattr(torchaudio, name, None)
        if original is None:
            continue

        def through_torchcodec(*args, _original=original, _name=name, **kwargs):
            try:
                return _original(*args, **kwargs)
            except (ImportError, OSError) as error:
                if "torchcodec" not in str(error).lower() and "libav" not in str(error).lower():
                    raise
                raise StackNotModelled(
                    f"torchaudio.{_name} works on stack {stack} (torchcodec with FFmpeg's libraries), but not in "
                    f"{sys.executable}: {type(error).__name__}: {str(error).splitlines()[0]}; install torchcodec there "
                    "and FFmpeg's shared libraries (Debian: apt-get install ffmpeg), see scripts/install_comfy_stack.sh"
                ) from error

        setattr(torchaudio, name, through_torchcodec)


def _no_ffmpeg_on_path(stack: str) -> None:
    which, popen_init = shutil.which, subprocess.Popen.__init__

    def is_ffmpeg(program) -> bool:
        return os.path.basename(str(program)) in ("ffmpeg", "ffmpeg.exe") and os.sep not in str(program)

    def modelled_which(cmd, *args, **kwargs):
        if is_ffmpeg(cmd) and _tree_on_stack():
            return None
        return which(cmd, *args, **kwargs)

    def modelled_init(self, args, *rest, **kwargs):
        if _tree_on_stack():
            shell = kwargs.get("shell", False)
            if shell and isinstance(args, (str, bytes)):
                words = shlex.split(args if isinstance(args, str) else args.decode(), posix=True) or [""]
                if is_ffmpeg(words[0]):
                    # what a POSIX shell says and returns for a command it cannot find
                    args = f"echo 'sh: 1: ffmpeg: not found' >&2; exit {SHELL_NOT_FOUND}"
            else:
                program = kwargs.get("executable") or (args if isinstance(args, (str, bytes)) else list(args)[0])
                if is_ffmpeg(program):
                    raise FileNotFoundError(2, f"No such file or directory: 'ffmpeg' (stack {stack}: none on PATH)")
        return popen_init(self, args, *rest, **kwargs)

    shutil.which = modelled_which
    subprocess.Popen.__init__ = modelled_init


def install(tree: str, model: dict) -> list[str]:
    """Make this process look like the stack to the tree's code. Returns notes on what could not be modelled."""
    global _INSIDE
    _INSIDE = os.path.realpath(tree) + os.sep
    stack = model["name"]
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if model.get("python") and model["python"] != here:
        NOTES.append(f"the stack's Python is {model['python']}, this interpreter's {here}")
    if model.get("block_modules"):
        for name in model["block_modules"]:
            for loaded in [m for m in sys.modules if m.split(".")[0] == name]:
                del sys.modules[loaded]
        sys.meta_path.insert(0, _Blocker(model["block_modules"], stack))
    for module_name, keep in model.get("keep", {}).items():
        _keep_only(module_name, keep, stack)
    for target, how in model.get("raise", {}).items():
        _raise_instead(target, how, stack)
    if model.get("needs_torchcodec"):
        _needs_torchcodec(stack)
    if not model.get("ffmpeg_on_path", True):
        _no_ffmpeg_on_path(stack)
    return NOTES
