"""The Starlette app: pages, JSON API, SSE."""
