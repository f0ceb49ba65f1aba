"""The verify harness and its parts, run in the tree's interpreter (see payload/__init__.py)."""
