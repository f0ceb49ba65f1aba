"""What runs inside the tree's interpreter (stdlib and torch only, loaded by path): the verify
harness, the forecast child, the MPS simulator, the probe, the runtime helper. Imports only itself,
never latentsync_mps: protocol.py is the border (the spec, the events, the one loader of siblings)."""
