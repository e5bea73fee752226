#!/usr/bin/env python3
"""A Summoner-protocol agent for end-to-end tests (issue 12).

It behaves on the wire as the Summoner SDK (summoner-core 1.3.0) does, written
here from the protocol description (../../docs/summoner.md), not from the SDK:
  - asyncio streams with the StreamReader's 64 KiB line limit (a longer line
    makes readline() raise: this agent then exits 3, as an SDK agent would
    lose the line or its receive loop);
  - every payload sent as the typed envelope json.dumps({"_version": "1.3.0",
    "_payload": P, "_type": T}) + "\\n";
  - every line received decoded as strict UTF-8 (else exit 4) and recovered:
    JSON strings inside JSON parsed again, typed envelopes unwrapped to their
    payload; lines starting with "Warning:" are notices.

It prints one JSON object per event on stdout (flushed):
  {"event": "connected", "addr": "ip:port"}
  {"event": "message", "remote_addr": ..., "content": <recovered>}
  {"event": "warning", "text": "Warning: ..."}
  {"event": "eof"}                               then exits 0
and reacts to messages from Convoke agents (remote_addr not "ip:port"):
  "burst:N"  sends N typed payloads {"seq": i, "from": NAME}, then {"done": N, "from": NAME}
  anything else, with --echo: sends {"echo": <content>, "from": NAME}
With --hello it first sends {"hello": NAME}.
"""

import argparse
import asyncio
import json
import re
import sys

LIMIT = 64 * 1024
VERSION = "1.3.0"
ADDR = re.compile(r"^(\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:.]+\]):\d+$")


def type_tree(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if value is None:
        return "null"
    if isinstance(value, list):
        return [type_tree(v) for v in value]
    if isinstance(value, dict):
        return {k: type_tree(v) for k, v in value.items()}
    return "str"


def typed_line(payload):
    envelope = {"_version": VERSION, "_payload": payload, "_type": type_tree(payload)}
    return (json.dumps(envelope) + "\n").encode()


def unnest(value):
    """Parses JSON held in strings, recursively (as the SDK does on receipt)."""
    if isinstance(value, str):
        try:
            return unnest(json.loads(value))
        except ValueError:
            return value
    if isinstance(value, list):
        return [unnest(v) for v in value]
    if isinstance(value, dict):
        return {k: unnest(v) for k, v in value.items()}
    return value


def recover(text):
    obj = unnest(text)
    if isinstance(obj, str):
        return obj[:-1] if obj.endswith("\n") else obj
    if not (isinstance(obj, dict) and "remote_addr" in obj and "content" in obj):
        return obj
    content = obj["content"]
    if isinstance(content, dict) and {"_version", "_payload", "_type"} <= content.keys():
        return {"remote_addr": obj["remote_addr"], "content": content["_payload"]}
    return obj


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="py")
    ap.add_argument("--echo", action="store_true")
    ap.add_argument("--hello", action="store_true")
    args = ap.parse_args()

    reader, writer = await asyncio.open_connection(args.host, args.port, limit=LIMIT)
    ip, port = writer.get_extra_info("sockname")[:2]
    emit(event="connected", addr=f"{ip}:{port}")
    if args.hello:
        writer.write(typed_line({"hello": args.name}))
        await writer.drain()

    while True:
        try:
            data = await reader.readline()
        except ValueError as e:  # LimitOverrunError: a line over 64 KiB
            emit(event="error", what=f"line over {LIMIT} bytes: {e}")
            sys.exit(3)
        if not data:
            emit(event="eof")
            return
        if len(data) > LIMIT:
            emit(event="error", what=f"line of {len(data)} bytes")
            sys.exit(3)
        try:
            text = data.decode()
        except UnicodeDecodeError as e:
            emit(event="error", what=f"not UTF-8: {e}")
            sys.exit(4)
        got = recover(text)
        if isinstance(got, str):
            if got.startswith("Warning:"):
                emit(event="warning", text=got)
            else:
                emit(event="other", text=got)
            continue
        if not isinstance(got, dict) or "remote_addr" not in got:
            emit(event="other", text=text)
            continue
        emit(event="message", remote_addr=got["remote_addr"], content=got["content"])
        sender, content = got["remote_addr"], got["content"]
        if ADDR.match(str(sender)):
            continue  # another Summoner agent: no commands from there
        if isinstance(content, str) and content.startswith("burst:"):
            n = int(content[len("burst:"):])
            out = b"".join(typed_line({"seq": i, "from": args.name}) for i in range(n))
            writer.write(out + typed_line({"done": n, "from": args.name}))
            await writer.drain()
        elif args.echo:
            writer.write(typed_line({"echo": content, "from": args.name}))
            await writer.drain()


if __name__ == "__main__":
    asyncio.run(main())
