"""The Redis adapters: topology and connections, the stock cache and its scripts, the event
streams (Dapr's layout) and their admin."""
