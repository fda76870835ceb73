"""The price table: shipped data, user overrides and the cost of one response."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from batchrunner.endpoint.usage import normalize_usage
from batchrunner.errors import ConfigError
from batchrunner.results import Usage
from batchrunner.stats.pricing import Price, PriceTable

REFERENCE_MODELS = (
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.0-flash",
    "gemini-2.0-flash-lite",
    "gemini-3-pro-preview",
    "gpt-oss-120b-maas",
    "gpt-oss-20b-maas",
)


@pytest.fixture
def table() -> PriceTable:
    return PriceTable.default()


def expected_cost(price: Price, prompt: int, cached: int, output: int) -> float:
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    return ((prompt - cached) * price.input + cached * cached_rate + output * price.output) / 1e6


def test_default_table_prices_every_reference_model_with_source_and_date(
    table: PriceTable,
) -> None:
    assert table.version
    for model in REFERENCE_MODELS:
        price = table.lookup(model)
        assert price is not None, model
        assert price.input > 0
        assert price.output > 0
        assert price.source
        assert price.as_of


def test_gemini_2_0_flash_uses_the_vertex_price_not_ai_studio(table: PriceTable) -> None:
    price = table.lookup("google/gemini-2.0-flash")
    assert price is not None
    assert (price.input, price.output) == (0.15, 0.60)


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("google/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini-2.5-flash", "gemini-2.5-flash"),
        ("google/gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("openai/gpt-oss-120b-maas", "gpt-oss-120b-maas"),
    ],
)
def test_lookup_forgives_publisher_prefix_and_version_suffix(
    table: PriceTable, model: str, entry: str
) -> None:
    price = table.lookup(model)
    assert price is not None
    assert price.model == entry


def test_lookup_of_unknown_model_is_none(table: PriceTable) -> None:
    assert table.lookup("acme/unknown-model-7b") is None
    assert table.lookup("gemini-2.5") is None


def test_gemini_cost_bills_reasoning_as_output(table: PriceTable) -> None:
    raw = {
        "prompt_tokens": 9,
        "completion_tokens": 566,
        "completion_tokens_details": {"reasoning_tokens": 946},
        "total_tokens": 1521,
    }
    model = "google/gemini-2.5-flash"
    price = table.lookup(model)
    assert price is not None
    cost = table.cost(model, normalize_usage(model, raw))
    assert cost == pytest.approx(expected_cost(price, 9, 0, 566 + 946))


def test_gpt_oss_cost_bills_reasoning_once(table: PriceTable) -> None:
    raw = {
        "prompt_tokens": 200,
        "completion_tokens": 900,
        "completion_tokens_details": {"reasoning_tokens": 700},
        "total_tokens": 1100,
    }
    model = "openai/gpt-oss-120b-maas"
    price = table.lookup(model)
    assert price is not None
    cost = table.cost(model, normalize_usage(model, raw))
    assert cost == pytest.approx(expected_cost(price, 200, 0, 900))


def test_cached_tokens_billed_at_cached_rate_and_not_again_as_input(table: PriceTable) -> None:
    model = "gemini-2.5-pro"
    price = table.lookup(model)
    assert price is not None
    assert price.cached_input is not None
    usage = Usage(prompt_tokens=10_000, completion_tokens=100, cached_tokens=8_000)
    cost = table.cost(model, usage)
    assert cost == pytest.approx(expected_cost(price, 10_000, 8_000, 100))
    uncached = table.cost(model, Usage(prompt_tokens=10_000, completion_tokens=100))
    assert uncached is not None
    assert cost is not None
    saved = 8_000 * (price.input - price.cached_input) / 1e6
    assert uncached - cost == pytest.approx(saved)


def test_cached_tokens_without_cached_rate_billed_once_at_input_rate(table: PriceTable) -> None:
    model = "gpt-oss-120b-maas"
    price = table.lookup(model)
    assert price is not None
    assert price.cached_input is None
    with_cache = table.cost(
        model, Usage(prompt_tokens=1000, completion_tokens=10, cached_tokens=900)
    )
    without = table.cost(model, Usage(prompt_tokens=1000, completion_tokens=10))
    assert with_cache == pytest.approx(without)


def test_long_context_tier_switches_on_prompt_size(table: PriceTable) -> None:
    model = "google/gemini-2.5-pro"
    price = table.lookup(model)
    assert price is not None
    threshold = price.long_context_threshold
    assert threshold is not None
    assert price.long_input
    assert price.long_output
    at = table.cost(model, Usage(prompt_tokens=threshold, completion_tokens=1000))
    above = table.cost(model, Usage(prompt_tokens=threshold + 1, completion_tokens=1000))
    assert at == pytest.approx((threshold * price.input + 1000 * price.output) / 1e6)
    assert above == pytest.approx(
        ((threshold + 1) * price.long_input + 1000 * price.long_output) / 1e6
    )


def test_unknown_usage_has_no_cost(table: PriceTable) -> None:
    assert table.cost("gemini-2.5-flash", Usage()) is None
    assert table.cost("gemini-2.5-flash", Usage(prompt_tokens=5)) is None


def test_unknown_model_has_no_cost_and_warns_once(
    table: PriceTable, caplog: pytest.LogCaptureFixture
) -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=10)
    with caplog.at_level(logging.WARNING, logger="batchrunner.stats.pricing"):
        assert table.cost("acme/mystery", usage) is None
        assert table.cost("acme/mystery", usage) is None
        assert table.cost("acme/mystery", usage) is None
    warnings = [r for r in caplog.records if "acme/mystery" in r.getMessage()]
    assert len(warnings) == 1


def test_user_file_overrides_and_adds_entries(table: PriceTable, tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        'version = "contract-2026"\n'
        '[models."google/gemini-2.5-flash"]\n'
        "output = 2.0\n"
        '[models."acme/model-x"]\n'
        "input = 1.0\noutput = 3.0\n"
        'source = "our contract"\nas_of = "2026-01-01"\n'
    )
    merged = PriceTable.load(path, base=table)
    base_flash = table.lookup("gemini-2.5-flash")
    flash = merged.lookup("gemini-2.5-flash")
    assert base_flash is not None
    assert flash is not None
    assert flash.output == 2.0
    assert flash.input == base_flash.input  # figures not given are kept
    assert str(path) in flash.source  # a changed figure names where it came from
    added = merged.lookup("acme/model-x")
    assert added is not None
    assert added.source == "our contract"
    assert merged.cost("acme/model-x", Usage(prompt_tokens=1000, completion_tokens=1000)) == (
        pytest.approx((1000 * 1.0 + 1000 * 3.0) / 1e6)
    )
    assert table.version in merged.version
    assert "contract-2026" in merged.version
    assert merged.lookup("gemini-2.5-pro") == table.lookup("gemini-2.5-pro")


def test_user_file_versioned_entry_leaves_base_entry_alone(
    table: PriceTable, tmp_path: Path
) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[models."gemini-2.0-flash-001"]\noutput = 9.0\n')
    merged = PriceTable.load(path, base=table)
    versioned, base = merged.lookup("gemini-2.0-flash-001"), merged.lookup("gemini-2.0-flash")
    assert versioned is not None
    assert versioned.output == 9.0
    assert base == table.lookup("gemini-2.0-flash")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[models."m-neg"]\ninput = -1\noutput = 1\n', "m-neg"),
        ('[models."m-str"]\ninput = "cheap"\noutput = 1\n', "m-str"),
        ('[models."m-typo"]\ninput = 1\noutptu = 1\n', "m-typo"),
        ('[models."m-half"]\ninput = 1\n', "m-half"),
        ('[models."m-thr"]\ninput = 1\noutput = 1\nlong_context_threshold = 2.5\n', "m-thr"),
        ('[models."m-batch"]\ninput = 1\noutput = 1\nbatch_discount = 50\n', "m-batch"),
        ('[models]\n"m-flat" = 3\n', "m-flat"),
    ],
)
def test_bad_entry_raises_config_error_naming_file_and_entry(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        PriceTable.load(path)
    assert str(path) in str(info.value)
    assert named in str(info.value)


def test_unparsable_or_missing_file_raises_config_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[models\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        PriceTable.load(broken)
    with pytest.raises(ConfigError, match=r"absent\.toml"):
        PriceTable.load(tmp_path / "absent.toml")
