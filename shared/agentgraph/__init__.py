"""agentgraph: run graphs of LLM agents serverless on Google Cloud, or in one local process."""

__version__ = "0.1.0"
