"""_lsync_port.py, the module that apply writes into a ported tree (it imports only torch and the
standard library)."""
