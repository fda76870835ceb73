"""Pipeline: one run's pool, from the input's rows to every result written once.

``runner`` orchestrates a run in one task group; ``producer`` reads the input and skips what
is done; ``sender`` takes one request through the limiter and the endpoint into a result row;
``queues`` hands requests to the workers and results to the writer; ``run_control`` records
why admission stopped; ``first_answers`` stops a run pointed at the wrong place; ``counters``
are the live numbers progress reads; ``dryrun`` estimates a run without sending; ``gctune``
and ``allocators`` set a batch process's garbage collection and memory allocators. The
modules here are private: their public names are exported by ``batchrunner``. They may import
every room below them (``input``, ``auth``, ``limits``, ``endpoint``, ``output``, ``stats``,
``report``) and the ground floor, never ``simulator``, ``scale`` or ``cli``.
"""
