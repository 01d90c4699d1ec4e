"""The ``local`` backend: torch + transformers + peft on this machine (CPU, or CUDA when present).

The implementation lives in :mod:`evsys.backends.local.backend` (imports torch); this package and
:mod:`~evsys.backends.local.params` / :mod:`~evsys.backends.local.resolve` import no torch, so
``evsys validate`` stays light.
"""
