"""The forecast child: the tree's models at real size on the meta device, memory and work counted
(see payload/__init__.py)."""
