"""The logic behind the API, the CLI and the workers. Functions take keyword-only arguments and a session."""
