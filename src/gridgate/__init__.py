"""gridgate: unified channel access platform for electric utilities."""

__version__ = "0.1.0"

__all__ = ["__version__"]
