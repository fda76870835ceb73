"""Report: statistics rendered for people, as text, Markdown, JSON or one HTML page.

``sections`` draws the tables every format shares; ``render`` writes them as text, Markdown
or JSON, and the end-of-run summary; ``html`` is the self-contained page with its charts;
``files`` reads result files into the statistics a report shows. The modules here are
private: their public names are exported by ``batchrunner``. They import the ground floor
(``errors``, ``results``, ``config``), ``stats`` and, to read result files, ``output``.
"""
