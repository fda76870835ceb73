"""Model prices and the cost of one response.

Prices are data, not constants: the shipped table (``batchrunner/data/prices.toml``) names
a source and a date for every entry, and a user file (``--prices``) can override or add
entries. :meth:`PriceTable.cost` bills cached prompt tokens at the cached rate only and
every generated token, reasoning included, at the output rate, at the rates of the tier that
served the request (the row's ``traffic_type``, as Vertex reports it): Flex and Priority
PayGo as multiples of the standard rates, batch prediction at its own rates, Provisioned
Throughput at no marginal cost (it is prepaid).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from batchrunner.errors import ConfigError
from batchrunner.results import Usage

__all__ = [
    "BATCH",
    "FLEX",
    "FLEX_MULTIPLIER",
    "PRIORITY",
    "PRIORITY_MULTIPLIER",
    "PROVISIONED",
    "STANDARD",
    "Price",
    "PriceTable",
]

logger = logging.getLogger(__name__)

_PER_TOKEN = 1e-6  # prices are per 1M tokens
_VERSION_SUFFIX = re.compile(r"-\d{3}$")  # gemini-2.0-flash-001

_RATE_FIELDS = (
    "input",
    "output",
    "cached_input",
    "long_input",
    "long_output",
    "long_cached_input",
)
_MULTIPLIER_FIELDS = ("flex_multiplier", "priority_multiplier")
_KNOWN_FIELDS = frozenset(
    {
        *_RATE_FIELDS,
        *_MULTIPLIER_FIELDS,
        "batch_input",
        "batch_output",
        "reasoning_prior",
        "reasoning_prior_source",
        "long_context_threshold",
        "batch_discount",
        "source",
        "as_of",
    }
)

#: Traffic types Vertex reports in ``usage.extra_properties.google.traffic_type``, and
#: ``BATCH`` for rows answered by batch prediction.
STANDARD, FLEX, PRIORITY, PROVISIONED, BATCH = (
    "ON_DEMAND",
    "ON_DEMAND_FLEX",
    "ON_DEMAND_PRIORITY",
    "PROVISIONED_THROUGHPUT",
    "BATCH",
)
FLEX_MULTIPLIER = 0.5  # Flex PayGo: 50 % off the standard rates
PRIORITY_MULTIPLIER = 1.8  # Priority PayGo: about 1.8x the standard rates


@dataclass(frozen=True, slots=True)
class Price:
    """Prices of one model in USD per 1M tokens, with where and when they were taken."""

    model: str
    input: float
    output: float  # thinking tokens included
    cached_input: float | None = None  # None: cached tokens billed at the input rate
    long_context_threshold: int | None = None  # prompts longer than this use long_*
    long_input: float | None = None
    long_output: float | None = None
    long_cached_input: float | None = None
    batch_discount: float | None = None  # fraction off for batch prediction (0.5 = half)
    batch_input: float | None = None  # batch prediction's own rates, when given
    batch_output: float | None = None
    flex_multiplier: float | None = None  # None: FLEX_MULTIPLIER (when the model offers Flex)
    priority_multiplier: float | None = None  # None: PRIORITY_MULTIPLIER
    reasoning_prior: float | None = None  # reasoning tokens per answer, for estimates
    reasoning_prior_source: str = ""  # where that figure comes from ("guess: ..." if none)
    source: str = ""
    as_of: str = ""

    def rates(self, prompt_tokens: int) -> tuple[float, float, float]:
        """The (input, cached input, output) rates for a prompt of this many tokens."""
        long = self.long_context_threshold is not None and prompt_tokens > (
            self.long_context_threshold
        )
        input_rate = self.input
        output_rate = self.output
        cached_rate = self.cached_input
        if long:
            input_rate = self.long_input if self.long_input is not None else input_rate
            output_rate = self.long_output if self.long_output is not None else output_rate
            if self.long_cached_input is not None:
                cached_rate = self.long_cached_input
        return input_rate, cached_rate if cached_rate is not None else input_rate, output_rate

    def tier_rates(
        self, prompt_tokens: int, traffic_type: str | None
    ) -> tuple[float, float, float]:
        """The (input, cached input, output) rates for the tier that served the request.

        Unknown or missing traffic types (a server that does not report one) are standard.
        Batch prediction uses ``batch_input``/``batch_output`` when given, else the standard
        rates less ``batch_discount``; cached tokens keep the cached rate there (the cache
        discount and the batch discount do not stack, and the cache one is the larger).
        """
        input_rate, cached_rate, output_rate = self.rates(prompt_tokens)
        if traffic_type is None or traffic_type == STANDARD:
            return input_rate, cached_rate, output_rate
        if traffic_type == PROVISIONED:
            return 0.0, 0.0, 0.0
        if traffic_type == BATCH:
            off = 1.0 - (self.batch_discount if self.batch_discount is not None else 0.0)
            batch_in = self.batch_input if self.batch_input is not None else input_rate * off
            batch_out = self.batch_output if self.batch_output is not None else output_rate * off
            return batch_in, min(cached_rate, batch_in), batch_out
        if traffic_type == FLEX:
            m = self.flex_multiplier if self.flex_multiplier is not None else FLEX_MULTIPLIER
        elif traffic_type == PRIORITY:
            given = self.priority_multiplier
            m = given if given is not None else PRIORITY_MULTIPLIER
        else:
            return input_rate, cached_rate, output_rate
        return input_rate * m, cached_rate * m, output_rate * m


def _bare(model: str) -> str:
    """The model id without its publisher prefix, lower-cased."""
    return model.strip().rpartition("/")[2].lower()


def _number(origin: str, model: str, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{origin}: models.{model}.{key} must be a number, not {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{origin}: models.{model}.{key} must be >= 0, not {value!r}")
    return number


def _parse_entry(
    origin: str, model: str, entry: object, base: Price | None, default_as_of: str
) -> Price:
    """One ``[models."…"]`` table, merged over ``base`` when it overrides a known model."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{origin}: models.{model} must be a table of prices")
    unknown = sorted(set(entry) - _KNOWN_FIELDS)
    if unknown:
        raise ConfigError(
            f"{origin}: models.{model} has unknown field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_KNOWN_FIELDS))}"
        )
    changes: dict[str, object] = {}
    for key in (*_RATE_FIELDS, *_MULTIPLIER_FIELDS, "batch_input", "batch_output"):
        if key in entry:
            changes[key] = _number(origin, model, key, entry[key])
    if "long_context_threshold" in entry:
        value = entry["long_context_threshold"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"{origin}: models.{model}.long_context_threshold must be a whole number "
                f"of tokens, not {value!r}"
            )
        changes["long_context_threshold"] = value
    if "batch_discount" in entry:
        discount = _number(origin, model, "batch_discount", entry["batch_discount"])
        if discount > 1:
            raise ConfigError(
                f"{origin}: models.{model}.batch_discount is a fraction (0.5 = half price), "
                f"not {entry['batch_discount']!r}"
            )
        changes["batch_discount"] = discount
    if "reasoning_prior" in entry:
        changes["reasoning_prior"] = _number(
            origin, model, "reasoning_prior", entry["reasoning_prior"]
        )
    for key in ("source", "as_of", "reasoning_prior_source"):
        if key in entry:
            if not isinstance(entry[key], str):
                raise ConfigError(f"{origin}: models.{model}.{key} must be a string")
            changes[key] = entry[key]
    # Figures changed here come from this file, not from the entry they replace.
    changes.setdefault("source", origin)
    changes.setdefault("as_of", default_as_of)

    if base is not None:
        return dataclasses.replace(base, model=model, **changes)  # type: ignore[arg-type]
    missing = [key for key in ("input", "output") if key not in changes]
    if missing:
        raise ConfigError(f"{origin}: models.{model} needs {' and '.join(missing)} prices")
    return Price(model=model, **changes)  # type: ignore[arg-type]


class PriceTable:
    """Prices by model id, with a table-level version; look-ups forgive id variants."""

    __slots__ = ("_by_bare", "_by_id", "_lock", "_resolved", "_warned", "version")

    def __init__(self, prices: Mapping[str, Price], version: str) -> None:
        self._by_id: dict[str, Price] = dict(prices)
        self._by_bare: dict[str, Price] = {}
        for model_id, price in self._by_id.items():
            self._by_bare.setdefault(_bare(model_id), price)
        self.version = version
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._resolved: dict[str, Price | None] = {}  # model -> lookup(), asked once each

    def __repr__(self) -> str:
        return f"PriceTable(version={self.version!r}, models={sorted(self._by_id)!r})"

    @property
    def prices(self) -> Mapping[str, Price]:
        """Every entry, by the id it was written under."""
        return dict(self._by_id)

    @classmethod
    def default(cls) -> PriceTable:
        """The table shipped with batchrunner."""
        text = resources.files("batchrunner").joinpath("data/prices.toml").read_text("utf-8")
        return cls._from_text(text, "batchrunner/data/prices.toml", base=None)

    @classmethod
    def for_run(cls, prices_path: str | os.PathLike[str] | None) -> PriceTable:
        """The table a run prices with: the shipped one, overridden by ``--prices`` if given."""
        table = cls.default()
        return cls.load(prices_path, base=table) if prices_path else table

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, base: PriceTable | None = None) -> PriceTable:
        """Read a price file; its entries override or extend ``base`` when one is given.

        An entry for a model ``base`` already knows may give only the figures that change.
        Raises :class:`ConfigError` naming the file and the entry on bad data.
        """
        origin = os.fspath(path)
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read price file {origin}: {exc}") from exc
        return cls._from_text(text, origin, base=base)

    @classmethod
    def _from_text(cls, text: str, origin: str, *, base: PriceTable | None) -> PriceTable:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc
        unknown = sorted(set(data) - {"version", "as_of", "models"})
        if unknown:
            raise ConfigError(f"{origin}: unknown top-level key(s) {', '.join(unknown)}")
        version = data.get("version", data.get("as_of"))
        if version is not None and not isinstance(version, str):
            raise ConfigError(f"{origin}: version must be a string, not {version!r}")
        as_of = data.get("as_of", version)
        if as_of is not None and not isinstance(as_of, str):
            raise ConfigError(f"{origin}: as_of must be a string, not {as_of!r}")
        models = data.get("models", {})
        if not isinstance(models, Mapping):
            raise ConfigError(f'{origin}: models must be a table of [models."<id>"] entries')

        prices: dict[str, Price] = dict(base._by_id) if base is not None else {}
        for model, entry in models.items():
            known = base.lookup(model) if base is not None else None
            price = _parse_entry(origin, model, entry, known, as_of or "unknown")
            if known is not None and known.model != model and _bare(known.model) == _bare(model):
                prices.pop(known.model, None)  # the same model under another spelling
            prices[model] = price

        file_version = version or Path(origin).name
        table_version = file_version if base is None else f"{base.version}+{file_version}"
        return cls(prices, table_version)

    def lookup(self, model: str) -> Price | None:
        """The price of ``model``: exact id, then without publisher, then unversioned."""
        try:
            return self._resolved[model]
        except KeyError:
            price = self._resolved[model] = self._find(model)
            return price

    def _find(self, model: str) -> Price | None:
        price = self._by_id.get(model)
        if price is not None:
            return price
        bare = _bare(model)
        price = self._by_bare.get(bare)
        if price is not None:
            return price
        unversioned = _VERSION_SUFFIX.sub("", bare)
        if unversioned != bare:
            return self._by_bare.get(unversioned)
        return None

    def cost(self, model: str, usage: Usage) -> float | None:
        """USD cost of one response, or None when the model or its usage is unknown.

        Cached prompt tokens are billed at the cached rate and not again at the input rate;
        output is ``usage.completion_tokens``, which includes reasoning. A prompt longer
        than the model's long-context threshold moves the whole request to the long tier.
        The rates are those of ``usage.traffic_type``, the tier that served the request
        (:meth:`Price.tier_rates`); Provisioned Throughput costs 0.
        """
        price = self.lookup(model)
        if price is None:
            with self._lock:
                first = model not in self._warned
                self._warned.add(model)
            if first:
                logger.warning(
                    "no price for model %r in price table %s; its cost is left empty",
                    model,
                    self.version,
                )
            return None
        prompt = usage.prompt_tokens
        output = usage.completion_tokens
        if prompt is None or output is None:
            return None
        cached = min(usage.cached_tokens or 0, prompt)
        input_rate, cached_rate, output_rate = price.tier_rates(prompt, usage.traffic_type)
        return (
            (prompt - cached) * input_rate + cached * cached_rate + output * output_rate
        ) * _PER_TOKEN

    def batch_cost(self, model: str, usage: Usage) -> float | None:
        """USD cost of one batch prediction: the on-demand rates less the batch discount.

        The discount is the entry's ``batch_discount`` (half price when it names none).
        Cached prompt tokens keep the cached rate: the cache discount does not stack with
        the batch discount, and wins where it hits.
        """
        price = self.lookup(model)
        if price is None:
            return self.cost(model, usage)  # None, with the one warning
        prompt = usage.prompt_tokens
        output = usage.completion_tokens
        if prompt is None or output is None:
            return None
        keep = 1.0 - (price.batch_discount if price.batch_discount is not None else 0.5)
        cached = min(usage.cached_tokens or 0, prompt)
        input_rate, cached_rate, output_rate = price.rates(prompt)
        return (
            (prompt - cached) * input_rate * keep
            + cached * min(cached_rate, input_rate * keep)
            + output * output_rate * keep
        ) * _PER_TOKEN
