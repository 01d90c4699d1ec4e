"""evsys.data."""
