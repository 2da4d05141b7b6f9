"""Sends CloudEvents to a hookwasm server with the official Python SDK (`cloudevents` on PyPI),
in structured, binary and batch modes, and prints each answer as one JSON line.

Usage: python3 send.py <base url> <id prefix>

Every event is the same but for its id: `<prefix>-structured`, `<prefix>-binary`,
`<prefix>-batch-1`, `<prefix>-batch-2`. The SDK has no batch serializer, so the batch is a JSON
array of events each written by the SDK's JSON event format, as the batch format defines it.
"""

import json
import sys
import urllib.request

from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from common import ATTRIBUTES, DATA


def event(event_id):
    return CloudEvent(dict(ATTRIBUTES, id=event_id), dict(DATA))


def post(url, headers, body):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def main():
    base, prefix = sys.argv[1], sys.argv[2]
    url = base.rstrip("/") + "/v1/events"
    for mode, serialize in (("structured", to_structured_event), ("binary", to_binary_event)):
        message = serialize(event(f"{prefix}-{mode}"))
        status, answer = post(url, dict(message.headers), message.body)
        print(json.dumps({"mode": mode, "status": status, "answer": answer}))
    fmt = JSONFormat()
    batch = [json.loads(fmt.write(event(f"{prefix}-batch-{n}"))) for n in (1, 2)]
    status, answer = post(
        url,
        {"content-type": "application/cloudevents-batch+json"},
        json.dumps(batch).encode("utf-8"),
    )
    print(json.dumps({"mode": "batch", "status": status, "answer": answer}))


if __name__ == "__main__":
    main()
