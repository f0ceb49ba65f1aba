"""Doctor checks of the host stack modelled (stacks.toml) and of the tree's requirements on that Mac
(mac_resolve.py: resolved for its platform and Python, wheels only)."""

from __future__ import annotations

from latentsync_mps.features.doctor.facts import ProbeFacts, reads_facts
from latentsync_mps.features.doctor.verdicts import BLOCKER, OK, WARNING, Check


@reads_facts
def check_stack(facts: ProbeFacts) -> Check | None:
    stack = facts.raw.get("stack")
    if not stack:
        return None
    if stack.get("error"):
        return Check("host stack", BLOCKER, stack["error"], "Name one of the known stacks with --stack.")
    packages = ", ".join(f"{name} {version}" for name, version in stack["packages"].items()) or "the tree's own pins"
    default = "the default for this tree" if stack.get("default") else "named by --stack"
    ffmpeg = "an ffmpeg on PATH" if stack["ffmpeg_on_path"] else "no ffmpeg on PATH"
    decord = stack.get("decord")
    wheels = f" decord with a macOS arm64 wheel for CPython {stack['python']}: {'; '.join(decord)}." if decord else ""
    return Check(
        "host stack",
        OK,
        f"modelled: {stack['name']} ({default}): {stack['summary']}; Python {stack['python']}, macOS "
        f"{stack['macos']}, {packages}, {ffmpeg}.{wheels} Source: {stack['source']} (checked {stack['checked']}).",
    )


@reads_facts
def check_mac_resolve(facts: ProbeFacts) -> Check | None:
    resolved = facts.raw.get("mac_resolve")
    if not resolved:
        return None
    name = "requirements on the Mac"
    from latentsync_mps.host.mac_resolve import Resolution

    line = Resolution.from_json(resolved).line()
    if resolved["status"] == "unchecked":
        return Check(
            name, WARNING, line + ".", "Run doctor again with the registry (PyPI) reachable, and uv installed."
        )
    if resolved["status"] == "resolved":
        return Check(name, OK, line + ".")
    missing = resolved["missing"]
    fixes = "; ".join(f"{m['requirement']}: {m['fix']}" for m in missing)
    detail = line + ": " + "; ".join(f"{m['requirement']} ({m['why']})" for m in missing) + "."
    status = WARNING if all(m["builds_on_mac"] for m in missing) else BLOCKER
    return Check(name, status, detail, fixes)
