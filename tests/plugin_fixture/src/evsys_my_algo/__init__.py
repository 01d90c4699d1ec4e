"""evsys_my_algo: an example third-party EvSys plugin (algorithm ``my_algo``)."""
