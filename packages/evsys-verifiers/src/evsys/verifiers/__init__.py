"""evsys.verifiers."""
