"""Output: writing result rows so that a crash loses none, and reading them back.

``ondisk`` is the contract of what a run leaves beside OUTPUT (parts, journals, manifest) and
how its pieces are read; ``durable`` the small verbs of crash-safe writing; ``writers`` opens
OUTPUT for a run, under its lock, as JSONL (``writers``) or Parquet (``parquet``, with its
``journal``); ``compaction`` finishes OUTPUT with one row per (id, model); ``resume`` gathers
what an earlier run wrote and checks it is the same job; ``keyindex`` holds per-row keys in
bounded memory, spilling to ``OUTPUT.index/``, and ``idset`` is its set of ids seen;
``read`` streams result files back as rows; ``merge`` joins the outputs of a job's shards.
The modules here are private: their public names are exported by ``batchrunner``. They
import only the ground floor (``errors``, ``results``, ``config``).
"""
