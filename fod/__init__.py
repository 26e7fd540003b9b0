"""pharma-fod: foreign-particle detection for liquid injectables, from training to the line."""

__version__ = "0.1.0"
