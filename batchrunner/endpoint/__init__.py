"""Endpoint: one exchange with a chat-completions server, from URL to parsed answer.

``urls`` builds the Vertex URL for a project, location and endpoint; ``wire`` carries the
bytes (aiohttp for real traffic, any httpx transport for tests); ``http_errors`` decides what
a failed exchange means and whether it is worth retrying; ``client`` sends one request and
parses its JSON or SSE answer with its timings; ``usage`` normalises the server's token
counts; ``retry`` is the policy that tries a row again. The modules here are private: their
public names are exported by ``batchrunner``. They import the ground floor (``errors``,
``results``, ``config``) and ``auth``.
"""
