"""The ``tinker`` backend: the Backend protocol on the remote Tinker training service.

Importing this package imports no SDK: :mod:`.params` and :mod:`.checks` are light (``evsys validate``
reads them); :mod:`.backend` and :mod:`.convert` import ``tinker`` (``pip install 'evsys-backends[tinker]'``).
"""
