"""A real SMTP server on loopback for hookwasm's e-mail tests (tests/e2e/notify.rs).

Runs Python's aiosmtpd on 127.0.0.1 and an OS-chosen port, prints `listening <port>` once it
accepts connections, and saves every message it receives into FOLDER as `<n>.json` (the SMTP
envelope's `from` and `to`, and the message's `text` and `html` parts decoded by Python's own
`email` parser) and then `<n>.eml` (the message exactly as received), so the test can poll for
`.eml` files. Runs until killed.

Usage: python3 smtp_sink.py FOLDER   (with aiosmtpd on PYTHONPATH; `cargo xtask test` installs
it into target/pip)
"""

import asyncio
import email
import email.policy
import json
import os
import pathlib
import sys

from aiosmtpd.smtp import SMTP


class Save:
    """aiosmtpd handler: one pair of files per message."""

    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        stem = self.folder / f"{self.count:04}"
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        parts = {}
        for kind in ("plain", "html"):
            part = message.get_body(preferencelist=(kind,))
            parts[kind] = part.get_content() if part is not None else None
        summary = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "text": parts["plain"],
            "html": parts["html"],
        }
        stem.with_suffix(".json").write_text(json.dumps(summary))
        partial = stem.with_suffix(".part")
        partial.write_bytes(raw)
        os.replace(partial, stem.with_suffix(".eml"))
        return "250 Message accepted for delivery"


async def main(folder):
    handler = Save(folder)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.hookwasm.test"), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(pathlib.Path(sys.argv[1])))
