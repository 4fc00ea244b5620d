"""socialfeat: learn image features from how people engage with images."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("socialfeat")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from socialfeat.errors import UserError

__all__ = ["UserError", "__version__"]
