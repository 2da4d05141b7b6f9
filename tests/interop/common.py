"""The attributes and data every interop event carries (send.js reads the same file's twin,
common.json)."""

import json
import os

with open(os.path.join(os.path.dirname(__file__), "common.json")) as f:
    _COMMON = json.load(f)

ATTRIBUTES = _COMMON["attributes"]
DATA = _COMMON["data"]
