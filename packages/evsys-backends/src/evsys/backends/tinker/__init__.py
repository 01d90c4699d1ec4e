"""The ``tinker`` backend: the Backend protocol on the remote Tinker training service.

Importing this package imports no SDK. :mod:`.params`, :mod:`.checks`, :mod:`.credentials`,
:mod:`.models` and :mod:`.chat` are light (``evsys validate`` reads them); :mod:`.backend`,
:mod:`.convert` (``to_tinker_datum``) and :mod:`.fakes` (fake clients for tests) import ``tinker``
(``pip install 'evsys-backends[tinker]'``). See docs/backends-tinker.md.
"""
