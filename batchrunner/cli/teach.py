"""A command line that teaches: one-line usage errors, "did you mean", examples in help.

:class:`Parser` is argparse with abbreviations off, errors as one line plus where to look,
and a suggestion for a mistyped flag. :func:`model_hints` suggests the known model a
mistyped or publisher-less ``--model`` meant (from the price table and the simulator).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

__all__ = ["EXIT_CODES", "Parser", "epilog", "known_models", "model_hints", "suggest_flag"]

EXIT_CODES = (
    "exit status: 0 every row ok · 1 some rows ended in error · "
    "2 bad usage, config or input file · 3 aborted (auth, disk, signal, budget)"
)


def epilog(*examples: str, codes: str = EXIT_CODES) -> str:
    lines = ["examples:", *(f"  {e}" for e in examples), "", codes]
    return "\n".join(lines)


class Parser(argparse.ArgumentParser):
    """argparse with no abbreviations and errors on one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def option_names(self) -> list[str]:
        return [o for action in self._actions for o in action.option_strings]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def suggest_flag(parser: Parser, extras: Sequence[str]) -> str:
    """``unrecognized arguments: --concurr 8; did you mean --concurrency?``"""
    message = f"unrecognized arguments: {' '.join(extras)}"
    for token in extras:
        if token.startswith("--"):
            name = token.split("=", 1)[0]
            close = difflib.get_close_matches(name, parser.option_names(), n=1, cutoff=0.6)
            if close:
                return f"{message}; did you mean {close[0]}?"
    return message


def known_models(priced: Iterable[str] = ()) -> list[str]:
    """Model ids batchrunner knows: the price table's (``priced``) and the simulator's."""
    from batchrunner.simulator import MODELS

    names = set(MODELS)
    names.update(priced)
    return sorted(n for n in names if "/" in n)


def model_hints(
    models: Iterable[str], known: Sequence[str] | None = None, *, priced: Iterable[str] = ()
) -> list[str]:
    """One line per model that looks mistyped: a missing publisher, or a near miss.

    A model the price table (``priced``) knows needs no hint; only otherwise are the known
    models gathered, which loads the simulator's table (start-up CPU every run would pay).
    """
    names = [m.split("@", 1)[0] for m in models]
    if known is None:
        priced = set(priced)  # the price table names models without their publisher
        if all("/" in name and name.rpartition("/")[2] in priced for name in names):
            return []
        known = known_models(priced)
    else:
        known = list(known)
    hints = []
    for model in names:
        name = model.split("@", 1)[0]
        if name in known:
            continue
        prefixed = [k for k in known if k.rpartition("/")[2] == name]
        if "/" not in name and prefixed:
            hints.append(
                f"model {name!r} has no publisher; Vertex serves it as {prefixed[0]!r} "
                f"(did you mean --model {prefixed[0]}?)"
            )
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if close:
            hints.append(f"model {name!r} is not one batchrunner knows; did you mean {close[0]!r}?")
    return hints


def print_hints(hints: Iterable[str]) -> None:
    for hint in hints:
        print(f"batchrunner: warning: {hint}", file=sys.stderr)
