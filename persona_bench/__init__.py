"""persona-bench: how personas in system prompts change LLM accuracy on multiple-choice questions."""

__version__ = "0.1.0"
