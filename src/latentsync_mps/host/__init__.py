"""The processes lsync-port starts outside itself: the tree's interpreter (a child that runs a payload
script and streams its events), the check of what that interpreter has, and uv resolving a tree's
requirements for the modelled Mac.

May import port/, pack/ and payload/protocol.py (the typed contract with the child); nothing else
of payload/, which it starts by path.
"""
