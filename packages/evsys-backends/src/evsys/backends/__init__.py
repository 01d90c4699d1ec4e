"""evsys.backends: the built-in training backends.

- ``local`` (:mod:`evsys.backends.local`): torch + transformers + peft, CPU or CUDA;
- ``tinker`` (:mod:`evsys.backends.tinker`): the remote Tinker service (``pip install 'evsys-backends[tinker]'``).

Both implement :class:`evsys.schema.protocols.Backend`.
"""
