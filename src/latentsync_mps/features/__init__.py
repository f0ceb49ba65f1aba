"""The three checks of a port, side by side: verify (smoke inference on a device), forecast (memory
and time at real size), doctor (pre-flight), plus targets (what lsync-port knows) and update
(revert, git pull, apply).

A feature may import host/, port/, pack/ and payload/protocol.py, never another feature: what two
features share lives below them. The CLI composes them (doctor --forecast runs forecast first).
"""
