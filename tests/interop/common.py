"""The attributes and data every interop event carries (send.js reads the same file's twin,
common.json)."""

import json
import os
from datetime import datetime

with open(os.path.join(os.path.dirname(__file__), "common.json")) as f:
    _COMMON = json.load(f)

# The Python SDK wants `time` as a datetime, and percent-encodes a non-ASCII subject.
ATTRIBUTES = dict(
    _COMMON["attributes"],
    time=datetime.fromisoformat(_COMMON["attributes"]["time"].replace("Z", "+00:00")),
    subject=_COMMON["pythonSubject"],
)
DATA = _COMMON["data"]
