"""The local emulator stack: stand-ins for the cloud services agentgraph talks to."""
