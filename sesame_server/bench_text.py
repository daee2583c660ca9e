"""`sesame-tts bench --text-frontend` (`--text` already names the CSM bench's sentence): how long the text front end takes on a 4 096-character agent
reply (markdown, prices, dates, links, emoji), median of N runs. It runs before every
request's first audio, so this is time to first audio it adds."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from sesame_server.spoken import normalize

SAMPLE = """## Your week

You have **3 meetings** on 2025-03-14: standup at 9:30 am, design review at 14:00 and a 1:1.

| Item | Price |
|---|---|
| Milk | $2.49 |
| Bread | €3 |

- Upgrade to `v2.4.1` (see [the guide](https://docs.example.com/migrate/v2)).
- It is 21.5°C, humidity 45% 🌤️; the rover went 3 km in 2024.
- Mail jane.doe@example.org or ping @alice, e.g. about #SpaceExploration.

```python
print("hello")
```

Revenue hit $4.5 billion, up 12% vs. last year. Only 1/2 of the votes are in. 🎉
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-frontend", dest="text_bench", action="store_true",
                        help="how long the text front end takes on a 4 096-character agent reply")


PLAIN = ("The meeting on 2025-03-14 at 9:30 am costs $12.50 for 3 people, about 45% more than in 2024. ")
PROSE = ("The quick brown fox jumps over the lazy dog while the rain keeps falling on the quiet town. ")
SENTENCE = "It is 21.5°C and sunny, see you at 9:30."


def _reply(sample: str, size: int = 4096) -> str:
    return (sample * (size // len(sample) + 1))[:size]


def run(args: argparse.Namespace, rounds: int = 50) -> dict:
    cases = {"markdown": _reply(SAMPLE), "numbers": _reply(PLAIN), "prose": _reply(PROSE), "sentence": SENTENCE}
    labels = {"markdown": "dense markdown reply (tables, lists, links, a number every few words)",
              "numbers": "plain text, a date, a time, a price and a percentage in every sentence",
              "prose": "plain prose", "sentence": "one sentence (a typical WebSocket piece)"}
    results = {}
    for name, text in cases.items():
        normalize(text)  # imports and regexes compiled: not counted
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            spoken = normalize(text)
            times.append(time.perf_counter() - started)
        results[name] = {"characters": len(text), "spoken_characters": len(spoken.text), "rounds": rounds,
                         "median_ms": round(statistics.median(times) * 1000, 2),
                         "p95_ms": round(sorted(times)[int(rounds * 0.95)] * 1000, 2)}
        row = results[name]
        print(f"Text front end, {labels[name]}: {row['characters']} characters -> {row['spoken_characters']} "
              f"spoken, median {row['median_ms']} ms, p95 {row['p95_ms']} ms over {rounds} runs")
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results
