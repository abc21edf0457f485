"""budgetd: the LLM budget authority."""

__version__ = "0.1.0"
