"""Tools for examples/word-tools.yaml: `agentgraph run examples/word-tools.yaml --tools
examples/word_tools.py`. An agent sees each as a function declaration built from its
signature and docstring."""

from __future__ import annotations

from agentgraph.tools import tool


@tool
def word_count(text: str) -> int:
    """Count the words of a text.

    Args:
        text: the text whose words are counted
    """
    return len(text.split())


@tool
def shout(text: str) -> str:
    """The text in capitals; an error for an empty text.

    Args:
        text: what to shout
    """
    if not text:
        raise ValueError("nothing to shout")
    return text.upper()
