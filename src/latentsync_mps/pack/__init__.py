"""The only reader of patches/ and of the tables and facts shipped with lsync-port: rule files,
upstream releases and their facts, host stacks, the MPS tables per torch release, measured figures.

Imports nothing of lsync-port outside pack/: everything above reads its data through here.
"""
