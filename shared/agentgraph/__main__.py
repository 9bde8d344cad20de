from agentgraph.cli import main

main()
