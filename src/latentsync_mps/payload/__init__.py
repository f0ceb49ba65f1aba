"""What runs inside the tree's own interpreter, in a child process, where lsync-port may not be
installed: the verify harness, the MPS simulator, the forecast child, doctor's probe, and the
runtime helper written into a ported tree.

Standard library and the tree's own packages (torch, ...) only; a payload module imports nothing of
lsync-port outside payload/, and siblings are loaded by path. protocol.py is the typed contract
that the host side may import.
"""
