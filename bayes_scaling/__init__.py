"""bayes_scaling: hierarchical Bayesian scaling laws for dense and Mixture-of-Experts LMs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bayes_scaling")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
