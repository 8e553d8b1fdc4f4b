"""ota's handlers: plain async functions taking a command or event and the ports they use."""
