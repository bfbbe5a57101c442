"""sessctl: a command-line session manager for LLM conversations."""

# Kept as a literal (not importlib.metadata) because `sessctl --version` must not pay
# for importing the packaging machinery.
__version__ = "0.1.0"
