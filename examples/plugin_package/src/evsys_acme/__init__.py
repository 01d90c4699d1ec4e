"""evsys-acme: an example third-party EvSys plugin (see README.md)."""
