"""A string that never shows itself: API keys and access tokens travel wrapped in ``Secret``.

Its ``repr`` and ``str`` are a fixed placeholder, so a secret that ends up in a log line, an
exception message or a debug dump of a config object reveals nothing; ``reveal()`` is the one
explicit way to get the value, used only where it is put on the wire.
"""

from __future__ import annotations

import hmac
from typing import Final, NoReturn

_PLACEHOLDER: Final = "Secret('***')"


class Secret:
    """A secret string: hashable and comparable, but never printed."""

    __slots__ = ("_value",)

    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the wrapped value; call only where it goes on the wire."""
        return self._value

    def __repr__(self) -> str:
        return _PLACEHOLDER

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return format(_PLACEHOLDER, format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant-time, so comparing secrets leaks nothing through timing.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self

    def __reduce__(self) -> NoReturn:
        # Pickling would write the value out in clear; a secret stays in this process.
        raise TypeError("a Secret cannot be pickled")
