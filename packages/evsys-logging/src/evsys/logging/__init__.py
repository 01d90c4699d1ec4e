"""evsys.logging."""
