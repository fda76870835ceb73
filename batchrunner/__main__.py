"""``python -m batchrunner``."""

from __future__ import annotations

import sys

from batchrunner.cli.main import main

sys.exit(main())
