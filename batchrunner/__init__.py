"""batchrunner: large batches of chat completions against Vertex AI, within quota, exactly once."""

from __future__ import annotations

__version__ = "0.1.0"
