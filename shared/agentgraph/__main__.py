"""The `agentgraph` command: its console script and `python -m agentgraph`."""

from agentgraph.cli_loading import loading


def main() -> None:
    with loading():
        from agentgraph.cli import main as command
    command()


if __name__ == "__main__":
    main()
