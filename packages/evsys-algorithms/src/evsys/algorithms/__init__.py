"""evsys.algorithms."""
