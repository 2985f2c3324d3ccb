"""The Anthropic-compatible Messages API over the chat machinery."""
