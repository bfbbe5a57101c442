"""LLM endpoints: base (the protocol), echo, openai, anthropic. The only home of httpx."""
