"""Micro-benchmark of the pgoutput decoder on captured Insert/Update messages (numbers, not pass/fail).

Usage::

    python bench/decode_bench.py [--seconds 3]

Decodes the real Insert and Update messages of ``tests/unit/data/pgoutput_v1.txt`` (the 3.6kB
TOASTed insert included) and of the streamed bulk insert in ``pgoutput_stream_v2.txt`` in a loop,
and prints messages per second for each set.  Also times ``parse_copy_data`` + decode together,
which is what the capture loop does per XLogData frame.
"""

from __future__ import annotations

import argparse
import struct
import time
from collections.abc import Callable
from pathlib import Path

from connectors.pg.pgoutput.decoder import PgOutputDecoder, decode_message
from connectors.pg.replication_protocol import parse_copy_data

DATA = Path(__file__).resolve().parent.parent / "tests" / "unit" / "data"


def load(name: str) -> list[bytes]:
    lines = (line.split("#", 1)[0].strip() for line in (DATA / name).read_text().splitlines())
    return [bytes.fromhex(line) for line in lines if line]


def rate(label: str, messages: list[bytes], decode: Callable[[bytes], object], seconds: float) -> None:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for message in messages:
            decode(message)
        count += len(messages)
    elapsed = time.perf_counter() - start
    size = sum(map(len, messages)) / len(messages)
    print(f"{label:<44} {count / elapsed:>12,.0f} msg/s   (avg {size:,.0f} bytes/msg)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()

    v1 = [m for m in load("pgoutput_v1.txt") if m[:1] in (b"I", b"U")]
    small_v1 = [m for m in v1 if len(m) < 1000]
    # Streamed inserts carry an xid, so they need a decoder inside a stream block.
    scan = PgOutputDecoder()
    streamed = []
    for raw in load("pgoutput_stream_v2.txt"):
        if scan.in_stream and raw[:1] == b"I":
            streamed.append(raw)
        scan.decode(raw)
    in_stream = PgOutputDecoder()
    in_stream.decode(struct.pack(">cIB", b"S", 1, 1))
    frames = [b"w" + struct.pack(">QQq", 1, 2, 3) + m for m in small_v1]

    rate("v1 Insert/Update (text, incl. TOAST)", v1, decode_message, args.seconds)
    rate("v1 Insert/Update (text, < 1kB)", small_v1, decode_message, args.seconds)
    rate("streamed Insert (2 columns)", streamed, in_stream.decode, args.seconds)
    rate(
        "XLogData frame + decode (v1, < 1kB)",
        frames,
        lambda f: decode_message(parse_copy_data(f).payload),  # type: ignore[union-attr]
        args.seconds,
    )


if __name__ == "__main__":
    main()
