"""Stats: what a run's rows add up to, and what they cost.

``run_stats`` aggregates result rows per model in memory that does not grow with the rows;
``quantiles`` and ``distribution`` are the percentiles and CDFs of one measurement;
``comparison`` sets several models side by side over the ids they all answered; ``pricing``
is the price table and the cost of one answer. The modules here are private: their public
names are exported by ``batchrunner``. They import only the ground floor (``errors``,
``results``, ``config``).
"""
