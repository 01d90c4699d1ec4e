"""evsys.algorithms: the built-in post-training algorithms ``sdft``, ``sft`` and ``grpo``.

Each is written only against :class:`evsys.schema.protocols.Backend`, built as
``Cls(params, backend, context)`` and driven by the run loop through ``train_step(batch, step)``.
Importing this package imports no torch.
"""
