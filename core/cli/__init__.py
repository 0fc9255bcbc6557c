"""The ``defectlab`` command line."""
