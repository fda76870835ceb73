"""The command line: flags → config → run → exit status, and the only code that prints.

``main`` parses the command line and dispatches to ``run``, ``simulate``, ``report`` and
``merge``; ``progress`` draws the live progress line. The modules here are private, and
nothing imports them but ``batchrunner.__main__`` and the ``batchrunner`` script. They may
import every room of the package and the simulator.
"""
