"""Running things outside lsync-port's process: a payload script in the tree's interpreter
(child.py: start, follow its events, kill on time-out), and the tree's requirements resolved for a
Mac (needs.py, mac_resolve.py). May import port/, pack/ and payload/protocol.py, nothing else of payload/."""
