"""`lsync-port verify`, the parent side: it builds the spec, runs payload/verify/ in the tree's
interpreter through host/, and judges the result (runner.py)."""
