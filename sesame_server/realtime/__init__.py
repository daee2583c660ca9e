"""Speech from text that arrives piece by piece (WebSocket stream-input): dialect-free."""
