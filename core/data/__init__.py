"""Data: the dataset base and samples, splits, transforms, tiling, source subsets and the data module."""
