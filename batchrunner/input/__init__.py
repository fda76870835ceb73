"""Input: reading rows from JSONL and Parquet, turning them into request bodies, planning shards.

``readers`` streams an input file as ``InputRow`` and ``BadRow`` values without holding it in
memory; ``bodies`` turns a row into one chat-completions body per model; ``shards`` splits a
job's input into the ranges its shards read. The modules here are private: their public names
are exported by ``batchrunner``. They import only the ground floor (``errors``, ``results``,
``config``).
"""
