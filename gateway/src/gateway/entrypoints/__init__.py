"""How the world reaches the gateway: HTTP on port 8080, and the command line."""
