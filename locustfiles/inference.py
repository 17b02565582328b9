"""`locust -f locustfiles/inference.py --host http://127.0.0.1:8000`: the harness's Locust users.

A thin entry point for plain Locust use from a checkout; the code lives in the installed package
(`harness/engines/locustfile.py`), which `harness run` and `harness ui` use directly.
"""
from harness.engines.locustfile import *  # noqa: F401,F403 - Locust collects the users and shape
