"""The HTTP server: OpenAI-compatible API, legacy /chat, web chat page, continuous batching."""
