"""The ``tinker`` backend: the Backend protocol on the remote Tinker training service.

Importing this package imports no SDK. :mod:`.params`, :mod:`.checks`, :mod:`.credentials`,
:mod:`.models`, :mod:`.catalog` (the model catalog and its cache), :mod:`.renderers` (which
``tml-renderers`` renderer a model gets; rendering itself imports it), :mod:`.chat` and
:mod:`.service_rules` are light (``evsys validate`` reads them; :mod:`.measure` tokenizes in a child
process); :mod:`.backend`, :mod:`.convert` (``to_tinker_datum``), :mod:`.simulator` (the strict
simulated service behind ``--dry-run``) and :mod:`.testing` (helpers for tests) import ``tinker``
(``pip install 'evsys-backends[tinker]'``). See docs/backends-tinker.md.
"""
