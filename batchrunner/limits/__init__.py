"""Limits: how many requests may be in flight and how fast they may start, per model.

``seam`` is the contract every limiter keeps (a request asks for a ``Permit`` with its
``TokenEstimate`` and hands it back with an ``Outcome``; ``LimitConfig`` holds one model's
limits); ``pacing`` is the arithmetic on an injected clock (GCRA buckets, a learned rate);
``local`` is the limiter of one process and ``ray`` the one a Ray job shares through an
actor. The modules here are private: their public names are exported by ``batchrunner``.
They import only the ground floor (``errors``, ``results``, ``config``); ``ray`` also imports
Ray, and only it.
"""
