"""``--dry-run``: read the input (or the run's shard of it), estimate tokens and cost per
model, send nothing.

Output is estimated with reasoning included: from OUTPUT's own answers of a model when it
already holds some (a nightly job re-estimates from last night), else from the model's
``reasoning_prior`` in the price table (sourced, or marked there as a guess) on top of the
assumed visible answer. Either way ``max_tokens`` caps it, as it caps the real answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batchrunner.config import RunConfig
from batchrunner.input.bodies import OversizedRequest, RowProblem, requests_for
from batchrunner.input.readers import BadRow
from batchrunner.input.shards import read_shard_rows
from batchrunner.output.read import load_results
from batchrunner.results import RequestSpec, Result, Usage
from batchrunner.stats.pricing import FLEX, PRIORITY, PROVISIONED, PriceTable

ASSUMED_OUTPUT_TOKENS = 256
HISTORY_ROWS = 100_000  # rows of OUTPUT read for its answers' mean sizes


@dataclass(slots=True)
class ModelEstimate:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0  # max_tokens where set, else the assumed output size
    capped_requests: int = 0  # requests whose output is bounded by their own max_tokens
    cost_usd: float | None = 0.0
    reasoning_tokens: int = 0  # the part of output_tokens expected to be reasoning
    basis: str = "assumed"  # where the output figure comes from
    answer: tuple[int, int] = (0, 0)  # per answer: (output incl. reasoning, reasoning)

    def add(self, spec: RequestSpec) -> None:
        """Count one request at this model's per-answer figures, capped by its max_tokens."""
        answer, reasoning = self.answer
        self.requests += 1
        self.input_tokens += spec.input_tokens
        if spec.max_output_tokens is not None:
            self.capped_requests += 1
            self.output_tokens += min(spec.max_output_tokens, answer)
            self.reasoning_tokens += min(spec.max_output_tokens, reasoning)
        else:
            self.output_tokens += answer
            self.reasoning_tokens += reasoning


@dataclass(slots=True)
class DryRunEstimate:
    rows: int = 0
    bad_rows: int = 0
    problems: list[str] = field(default_factory=list)  # the first few, for the reader
    models: dict[str, ModelEstimate] = field(default_factory=dict)
    assumed_output_tokens: int = ASSUMED_OUTPUT_TOKENS
    shard: tuple[int, int] | None = None  # (index, count) when only one shard was read


def estimate(
    config: RunConfig,
    prices: PriceTable,
    *,
    assumed_output_tokens: int = ASSUMED_OUTPUT_TOKENS,
) -> DryRunEstimate:
    """Walk the input once (streaming) and add up what the run would send.

    A run of one shard (``config.shard``) reads, and estimates, only that shard's rows.
    """
    result = DryRunEstimate(assumed_output_tokens=assumed_output_tokens, shard=config.shard)
    history = _history(config)
    for row in read_shard_rows(config.input, config.fields, config.shard):
        result.rows += 1
        if isinstance(row, BadRow):
            result.bad_rows += 1
            if len(result.problems) < 5:
                result.problems.append(f"{row.where}: {row.problem}")
            continue
        try:
            specs = requests_for(config, row)
        except OversizedRequest as exc:
            result.bad_rows += 1  # refused for some models, sent to the others
            if len(result.problems) < 5:
                result.problems.append(f"{row.where}: {exc}")
            specs = list(exc.specs)
        except RowProblem as exc:
            result.bad_rows += 1
            if len(result.problems) < 5:
                result.problems.append(f"{row.where}: {exc}")
            continue
        for spec in specs:
            m = result.models.get(spec.model)
            if m is None:
                m = result.models[spec.model] = _model_estimate(
                    spec.model, prices, history, assumed_output_tokens
                )
            m.add(spec)
    for model, m in result.models.items():
        m.cost_usd = _cost(config, prices, model, m)
    return result


def _model_estimate(
    model: str, prices: PriceTable, history: dict[str, tuple[int, int, int]], assumed: int
) -> ModelEstimate:
    m = ModelEstimate()
    m.answer = _per_answer(model, prices, history, assumed, m)
    return m


def _cost(config: RunConfig, prices: PriceTable, model: str, m: ModelEstimate) -> float | None:
    """The estimate's cost at the tier the run asks for."""
    return prices.cost(
        model,
        Usage(
            prompt_tokens=m.input_tokens,
            completion_tokens=m.output_tokens,
            reasoning_tokens=None,
            cached_tokens=None,
            total_tokens=m.input_tokens + m.output_tokens,
            traffic_type=PROVISIONED
            if config.provisioned == "only"
            else {"flex": FLEX, "priority": PRIORITY}.get(config.tier_of(model)),
        ),
    )


@dataclass(frozen=True, slots=True)
class EstimateComparison:
    """What the dry run would have said a model's answered requests cost, and what they did."""

    model: str
    requests: int
    estimated_usd: float
    actual_usd: float
    basis: str  # where the estimate's output figure came from


class EstimateCheck:
    """Tallies, as a run goes, the dry run's estimate for the requests it got answers for.

    The end-of-run summary sets it beside their real cost, so a nightly job learns how far
    its plan was off; the estimate's figures are fixed when the run starts (OUTPUT's own
    answers before the run, else the model's reasoning prior).
    """

    __slots__ = ("_actual", "_config", "_history", "_models", "_prices")

    def __init__(
        self, config: RunConfig, prices: PriceTable, history: dict[str, tuple[int, int, int]]
    ) -> None:
        self._config = config
        self._prices = prices
        self._history = history
        self._models: dict[str, ModelEstimate] = {}
        self._actual: dict[str, float] = {}

    @classmethod
    def for_run(cls, config: RunConfig, prices: PriceTable) -> EstimateCheck:
        """Blocking (reads a sample of OUTPUT): call it off the event loop."""
        return cls(config, prices, _history(config))

    def add(self, spec: RequestSpec, result: Result) -> None:
        if result.cost_usd is None or result.status != "ok":
            return
        m = self._models.get(spec.model)
        if m is None:
            m = self._models[spec.model] = _model_estimate(
                spec.model, self._prices, self._history, ASSUMED_OUTPUT_TOKENS
            )
        m.add(spec)
        self._actual[spec.model] = self._actual.get(spec.model, 0.0) + result.cost_usd

    def comparisons(self) -> tuple[EstimateComparison, ...]:
        out = []
        for model in sorted(self._models):
            m = self._models[model]
            estimated = _cost(self._config, self._prices, model, m)
            if estimated is not None:
                out.append(
                    EstimateComparison(model, m.requests, estimated, self._actual[model], m.basis)
                )
        return tuple(out)


def _history(config: RunConfig) -> dict[str, tuple[int, int, int]]:
    """Per model in OUTPUT: (ok answers, output tokens, reasoning tokens) summed."""
    sums: dict[str, tuple[int, int, int]] = {}
    if config.restart or not config.output.is_file():
        return sums
    columns = ["id", "model", "status", "completion_tokens", "reasoning_tokens"]
    # A mean needs a sample, not a 100-million-row pass: the first HISTORY_ROWS answers.
    for seen, r in enumerate(load_results([config.output], columns=columns)):
        if seen >= HISTORY_ROWS:
            break
        if r.status != "ok" or r.completion_tokens is None:
            continue
        n, out, reasoning = sums.get(r.model, (0, 0, 0))
        sums[r.model] = (n + 1, out + r.completion_tokens, reasoning + (r.reasoning_tokens or 0))
    return sums


def _per_answer(
    model: str,
    prices: PriceTable,
    history: dict[str, tuple[int, int, int]],
    assumed: int,
    m: ModelEstimate,
) -> tuple[int, int]:
    """(output tokens with reasoning, reasoning tokens) to expect per answer of ``model``."""
    seen = history.get(model)
    if seen is not None and seen[0]:
        n, out, reasoning = seen
        m.basis = f"{n:,} answers in OUTPUT"
        return round(out / n), round(reasoning / n)
    price = prices.lookup(model)
    if price is None or price.reasoning_prior is None:
        m.basis = "assumed, no reasoning prior"
        return assumed, 0
    prior = round(price.reasoning_prior)
    guess = price.reasoning_prior_source.startswith("guess")
    m.basis = f"reasoning prior {prior:,}{' (a guess)' if guess else ''}"
    return assumed + prior, prior


def render(est: DryRunEstimate) -> str:
    """A short table for the terminal."""
    shard = "" if est.shard is None else f" of shard {est.shard[0]}/{est.shard[1]}"
    lines = [
        f"dry run: {est.rows:,} rows{shard} read, {est.bad_rows:,} unusable; nothing was sent",
        f"{'model':<34} {'requests':>10} {'input tok':>12} {'output tok':>12} {'cost USD':>10}",
    ]
    total = 0.0
    unknown = False
    for model, m in sorted(est.models.items()):
        cost = "unknown" if m.cost_usd is None else f"{m.cost_usd:,.4f}"
        if m.cost_usd is None:
            unknown = True
        else:
            total += m.cost_usd
        lines.append(
            f"{model:<34} {m.requests:>10,} {m.input_tokens:>12,} {m.output_tokens:>12,} {cost:>10}"
            f"  output from {m.basis}"
        )
    lines.append(f"{'total':<34} {'':>10} {'':>12} {'':>12} {total:>10,.4f}")
    lines.append(
        f"estimates: input = characters/4 + 4 per message; output, reasoning included = "
        f"min(max_tokens, the mean of OUTPUT's answers of the model, else "
        f"{est.assumed_output_tokens} + the model's reasoning prior) per request"
    )
    if unknown:
        lines.append("no price is known for some models; pass --prices FILE to add them")
    lines.extend(f"  {p}" for p in est.problems)
    return "\n".join(lines)
