"""Vertex batch prediction behind ``batchrunner run --via batch``: half price, no latency.

Requests are translated into batch input lines (``translate``: native GenerateContent lines
for Gemini, OpenAI batch lines for MaaS models), split into files within Vertex's limits,
staged in Cloud Storage (``staging``), submitted as ``batchPredictionJobs`` (``jobs``), recorded
beside OUTPUT before anything waits (``state``), polled, and read back into the usual result
rows (``predictions``). ``route`` runs the whole of it.

May import the ground floor, ``input``, ``auth``, ``endpoint``, ``output`` and ``stats``;
imported by ``launch`` and ``cli``.
"""
