"""evsys.cli."""
