"""HTTP: thin routers that translate requests into domain calls and errors into JSON."""
