"""lsync-port: port a LatentSync checkout to Apple Silicon with declarative libcst rules."""

__version__ = "0.1.0"
