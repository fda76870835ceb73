"""Regenerate the sample prompt set: ``python sample_data/generate.py``.

A few hundred realistic rows: sentiment and toxicity scoring, questions of varied length,
extraction into JSON, a few multi-turn ``messages`` rows and rows with their own parameters.
The same file is written as JSONL and Parquet.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent

REVIEWS = [
    "The battery lasts two full days and the screen is gorgeous.",
    "Arrived broken, support never answered my emails.",
    "Does what it says. Nothing more, nothing less.",
    "I have bought three of these for my family; everyone loves them.",
    "The app crashes every time I open the settings page.",
    "Great value for the price, though the strap feels cheap.",
    "Delivery took a month and the box was soaked.",
    "Honestly the best headphones I have owned in ten years.",
    "It stopped charging after a week. Refund requested.",
    "Setup was painless and the instructions were clear.",
]
QUESTIONS = [
    "What is the capital of Australia?",
    "Explain the difference between TCP and UDP in two sentences.",
    "Why is the sky blue?",
    "Summarise the causes of the French Revolution for a twelve-year-old.",
    "What does a p99 latency tell you that a mean does not?",
    "Write a haiku about rate limits.",
    "How many prime numbers are there below 50?",
    "What is exponential backoff with full jitter, and why does it help?",
    "Translate 'exactly once' into French and German.",
    "Give three tips for writing a good commit message.",
    "What is the boiling point of water at the top of Mount Everest?",
    "Describe how a Parquet file stores a column of strings.",
]
LONG_CONTEXT = (
    "You are reviewing an incident report. At 02:13 UTC the nightly scoring job started "
    "against the production endpoint with 4,000,000 prompts. At 03:14 UTC every request "
    "began failing with HTTP 401 because the bearer token baked into the client at start "
    "had expired. The job kept retrying for six hours, spending nothing but producing "
    "nothing, and the on-call engineer was paged at 09:02 UTC. "
)
TICKETS = [
    "Order #4411: customer Ana Silva, two items, ship to Lisbon, paid by card.",
    "Order #9023: customer Tom Baker, one item, ship to Leeds, paid by invoice.",
    "Order #1178: customer Mei Chen, five items, ship to Taipei, paid by card.",
]


def rows() -> list[dict[str, object]]:
    rng = random.Random(20261122)
    out: list[dict[str, object]] = []
    n = 0

    def add(row: dict[str, object]) -> None:
        nonlocal n
        row = {"id": f"s{n:04d}", **row}
        n += 1
        out.append(row)

    for i in range(120):
        review = REVIEWS[i % len(REVIEWS)]
        add(
            {
                "prompt": "Rate the sentiment of this product review from 1 (very negative) "
                f"to 5 (very positive). Answer with the digit only.\n\nReview: {review}",
                "task": "sentiment",
                "max_tokens": 2048,  # room to answer after a low effort's 1,024 thinking tokens
                "reasoning_effort": "low",
                "temperature": 0,
            }
        )
    for i in range(100):
        q = QUESTIONS[i % len(QUESTIONS)]
        extra = " Please be thorough." * rng.randint(0, 3)
        add({"prompt": q + extra, "task": "qa", "max_tokens": rng.choice([2048, 4096, 8192])})
    for i in range(40):
        t = TICKETS[i % len(TICKETS)]
        add(
            {
                "prompt": f"Extract customer, item_count, city and payment as JSON.\n\n{t}",
                "task": "extraction",
                "response_format": {"type": "json_object"},
                "max_tokens": 2048,
            }
        )
    for _ in range(20):
        add(
            {
                "prompt": LONG_CONTEXT * rng.randint(3, 12)
                + "\nWhat should the job have done differently? List three changes.",
                "task": "long",
                "system": "You are a terse site-reliability engineer.",
                "max_tokens": 4096,
            }
        )
    for i in range(20):
        add(
            {
                "messages": [
                    {"role": "system", "content": "You answer in one short paragraph."},
                    {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},
                    {"role": "assistant", "content": "Here is a first answer."},
                    {"role": "user", "content": "Now say it more simply."},
                ],
                "task": "multi_turn",
                "params": {"max_tokens": 2048, "temperature": 0.3},
            }
        )
    for _ in range(20):
        add(
            {
                "prompt": QUESTIONS[rng.randrange(len(QUESTIONS))],
                "task": "reasoning",
                "reasoning_effort": rng.choice(["low", "medium", "high"]),
                "max_tokens": 8192,
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Regenerate sample_data/prompts.jsonl and prompts.parquet (320 rows, "
        "seeded: the same files every time). Overwrites both.",
    )
    parser.parse_args(argv)
    data = rows()
    with (HERE / "prompts.jsonl").open("w", encoding="utf-8") as f:
        for row in data:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    # Parquet columns must have one type: nested values travel as JSON strings there.
    flat = [
        {
            k: json.dumps(v) if isinstance(v, (dict, list)) and k != "messages" else v
            for k, v in row.items()
        }
        for row in data
    ]
    names = list(dict.fromkeys(k for row in flat for k in row))
    table = pa.Table.from_pydict({k: [row.get(k) for row in flat] for k in names})
    pq.write_table(table, HERE / "prompts.parquet")
    print(f"wrote {len(data)} rows")


if __name__ == "__main__":
    main()
