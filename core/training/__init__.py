"""Training: the loop and its settings, checkpoints, weights, transfer, distributed runs, scoring a split."""
