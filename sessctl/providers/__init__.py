"""LLM endpoints: base (the protocol), echo, openai, anthropic; transport (HTTP: asyncio for
plain http, httpx for the rest). The only home of httpx."""
