"""Test-session settings shared by the unit tests and nbval.

The notebooks read their profile and run folder from the environment when their parameters are
left empty, so setting these here makes ``pytest`` execute every notebook in the fast ``smoke``
profile, headless, into one throw-away run folder that notebook N+1 can read from notebook N.
"""

import os
from pathlib import Path

os.environ.setdefault("TOFMRA_PROFILE", "smoke")
os.environ.setdefault("TOFMRA_HEADLESS", "1")
os.environ.setdefault("TOFMRA_RUN_DIR", str(Path(__file__).parent / "runs" / "test-smoke"))
