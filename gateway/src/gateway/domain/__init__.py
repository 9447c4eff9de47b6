"""What the gateway decides: which route, who calls, whether the call may pass. No I/O."""
