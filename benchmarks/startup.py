"""Start-up time of the CLI against importing torch, measured side by side in one run.

    python benchmarks/startup.py [--repeat 7]

Reports the median wall time of each command and its ratio to `python -c "import torch"`.
Aims: `defectlab --help` under a third of the torch import; `defectlab list` at most 1.2x it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = str(Path(sys.executable).with_name("defectlab"))
COMMANDS = {
    "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
    "defectlab --help": [BIN, "--help"],
    "defectlab list": [BIN, "list"],
}


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def median_seconds(commands: dict[str, list[str]], repeat: int) -> dict[str, float]:
    """Median wall time of each command over ``repeat`` rounds, the commands taking turns within a
    round so that a noisy neighbour slows them alike; one warm-up run each first (file cache filled)."""
    for command in commands.values():
        timed(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, command in commands.items():
            times[name].append(timed(command))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    results = median_seconds(COMMANDS, args.repeat)
    reference = results["python -c 'import torch' (reference)"]
    print(f"{'command':<40} {'median s':>9} {'x torch':>8}")
    for name, seconds in results.items():
        print(f"{name:<40} {seconds:9.3f} {seconds / reference:8.2f}")


if __name__ == "__main__":
    main()
