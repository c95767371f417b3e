"""The request path: the pure-ASGI middleware and the app when monitoring is off."""
