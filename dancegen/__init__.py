"""dancegen: music-driven dance video generation (dataset pipeline, M2PEnc, video LDM)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dancegen")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
