"""The xenofeat version, recorded in every file the tool writes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xenofeat")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0+src"
