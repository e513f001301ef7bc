"""A small OpenAI-compatible upstream for demos and tests (``regiongate demo-upstream``)."""
