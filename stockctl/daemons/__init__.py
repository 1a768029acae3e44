"""The long-running processes: the HTTP API (`serve`), the worker jobs, and their metrics."""
