"""Scale: one job's shards run on a Ray cluster (``pip install 'batchrunner[ray]'``).

``ray`` plans the input's shards, runs the ordinary pipeline on each in a Ray Data actor pool
with one job-wide limiter, and merges the shards' outputs. The module is private: its public
names are exported by ``batchrunner``. It may import the pipeline and every room below it,
never ``cli``.
"""
