"""``make loadtest``: locust against the router's ``rag`` stream (locustfile.py), the stack it runs
against (run.py) and the summary of locust's CSV (summary.py)."""
