"""The ``tinker`` backend: the Backend protocol on the remote Tinker training service.

Importing this package imports no SDK. :mod:`.params`, :mod:`.checks`, :mod:`.credentials`,
:mod:`.models`, :mod:`.chat` and :mod:`.service_rules` are light (``evsys validate`` reads them);
:mod:`.backend`, :mod:`.convert` (``to_tinker_datum``), :mod:`.simulator` (the strict simulated service
behind ``--dry-run``) and :mod:`.testing` (helpers for tests) import ``tinker``
(``pip install 'evsys-backends[tinker]'``). See docs/backends-tinker.md.
"""
