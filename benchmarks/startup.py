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


def median_seconds(command: list[str], repeat: int) -> float:
    """Median wall time of ``repeat`` runs after one warm-up run (file cache filled)."""
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    results = {name: median_seconds(command, args.repeat) for name, command in COMMANDS.items()}
    reference = results["python -c 'import torch' (reference)"]
    print(f"{'command':<40} {'median s':>9} {'x torch':>8}")
    for name, seconds in results.items():
        print(f"{name:<40} {seconds:9.3f} {seconds / reference:8.2f}")


if __name__ == "__main__":
    main()
