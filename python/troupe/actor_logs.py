"""Actors' output logs read through the head (`Actors.ReadActorLog`): each incarnation's lines
with the node it ran on and how it ended. A node agent writes each line as `UNIX_MS O|E text`."""

from dataclasses import dataclass, field
from typing import List, Optional

import grpc

from .v1 import head_pb2

#: Bytes asked for per read; the head's node agents send at most 1 MiB each.
READ_BYTES = 1 << 20
#: Most bytes read of one incarnation's log (its end, when it is longer).
MAX_READ_BYTES = 64 << 20
#: Failures that make one incarnation's log unreadable (its node is dead, gone or slow, or the
#: log is missing) rather than failing the whole read.
UNREADABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class LogLine:
    """One line an actor wrote: when the node agent read it (ms since the epoch, 0 if unknown),
    `stdout` or `stderr`, and its text."""

    unix_ms: int
    stream: str
    text: str


@dataclass
class IncarnationLog:
    """One worker process of an actor: where and when it ran, how it ended, and its lines.
    `unreadable` says why there are no lines when its node died or left."""

    actor_id: str
    incarnation: int
    node_id: str
    started_unix_ms: int
    ended_unix_ms: int
    exit_reason: str
    lines: List[LogLine] = field(default_factory=list)
    unreadable: Optional[str] = None


def parse_line(line: str) -> LogLine:
    """One record; a line that is not one comes back as stdout text at time 0."""
    time_text, _, rest = line.partition(" ")
    tag, _, text = rest.partition(" ")
    if time_text.isdigit() and tag in ("O", "E"):
        return LogLine(int(time_text), "stdout" if tag == "O" else "stderr", text)
    return LogLine(0, "stdout", line)


def parse_records(data: bytes) -> List[LogLine]:
    """Every line of `data` (UTF-8, undecodable bytes replaced)."""
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [parse_line(line) for line in lines]


def looks_like_id(actor: str) -> bool:
    """Whether `actor` has the shape of the ids a head gives (`actor-` and 12 hex digits)."""
    hexpart = actor[len("actor-") :]
    return actor.startswith("actor-") and len(hexpart) == 12 and all(c in "0123456789abcdefABCDEF" for c in hexpart)


def request_for(actor: str, **fields) -> "head_pb2.ReadActorLogRequest":
    """A request naming `actor` by id when it has the shape of one, else by name."""
    if looks_like_id(actor):
        return head_pb2.ReadActorLogRequest(id=actor, **fields)
    return head_pb2.ReadActorLogRequest(name=actor, **fields)
