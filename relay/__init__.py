"""relay: a privacy-number switch (SIP B2BUA, media relay with recording, SMS, bindings)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("privacy-relay")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+source"
