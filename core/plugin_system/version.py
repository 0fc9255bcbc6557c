"""defectlab's own version, as installed."""

from importlib import metadata

try:
    VERSION = metadata.version("defectlab")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0+unknown"
