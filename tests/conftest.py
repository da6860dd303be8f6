"""Test-session settings. Under CI (CI=true) hypothesis runs derandomized, so a green build stays green and a
property found broken locally is fixed and pinned as an explicit test (see tests/test_fuzz.py)."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
