"""AMI wire format: framing, decoding and encoding. Pure code, no I/O.

The parser turns the raw byte stream of one AMI TCP session into :class:`AmiMessage` objects. It exists
(instead of panoramisk's) because UTF-8 must be decoded per *whole message*: a caller name such as
"张伟" may be split across two TCP reads, and decoding each read on its own corrupts it. It is also the hot
path of the CTI server (a busy PBX sends thousands of events a second, two thirds of them VarSet/Newexten
in the captures), so
it works on the byte buffer with C-level ``bytes`` operations (``in``, ``split``, ``replace``), builds each
dict in one call and decodes each message exactly once.

Wire format (Asterisk 22, banner still "Asterisk Call Manager/11.0.0"):

* one banner line ``Asterisk Call Manager/x.y.z\\r\\n`` when the connection opens (no blank line after it);
* then messages: ``Key: value\\r\\n`` lines, each message ended by an empty line (``\\r\\n\\r\\n``);
* Asterisk before 14 answered ``Command`` with ``Response: Follows``, raw output lines (bare ``\\n``, may
  contain blank lines and colons) and ``--END COMMAND--\\r\\n\\r\\n``; Asterisk 14+ sends ``Output:`` lines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Final

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "AmiMessage",
    "AmiParser",
    "AmiParserStats",
    "FieldValue",
    "encode_action",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024
"""Largest message accepted, in bytes. The biggest event in the captures is 1.2 KiB (BlindTransfer);
64 KiB leaves room for long Command output and channel-variable dumps while bounding memory when a peer
sends garbage without terminators."""

_BANNER_MARK: Final = b"Call Manager/"
_MAX_BANNER_LINE: Final = 256
_FOLLOWS: Final = b"Response: Follows"
_END_COMMAND: Final = b"--END COMMAND--"
_END_COMMAND_TEXT: Final = "--END COMMAND--"
_FOLLOWS_HEADERS: Final = frozenset({"Response", "Privilege", "ActionID", "Message"})
_PREVIEW: Final = 80
# Infinite iterators shared by every map() call of the fast path (map only ever pulls from them).
_SPLIT: Final = str.split
_SEPARATOR: Final = repeat(": ")
_ONCE: Final = repeat(1)


class AmiMessage(dict[str, str]):
    """One AMI event or response.

    A plain ``dict`` of field name to value (exact case, as Asterisk sends it), so ``msg["Uniqueid"]`` is a
    C-level dict lookup. When a key occurs more than once (``ChanVariable``, ``Output``, TestEvent's
    ``State``) the dict holds the *first* value and :meth:`get_all` returns every value in order.
    """

    # Only messages with repeated keys get an instance attribute; the class default keeps the common case
    # free of any extra allocation.
    _repeated: dict[str, list[str]] | None = None

    @property
    def name(self) -> str:
        """The event name (``Event:`` field), or ``"Response"`` for a response."""
        event = self.get("Event")
        return "Response" if event is None else event

    @property
    def is_event(self) -> bool:
        """True for events. OriginateResponse carries both ``Event`` and ``Response``: it is an event."""
        return "Event" in self

    @property
    def is_response(self) -> bool:
        """True for the Response to an action."""
        return "Event" not in self and "Response" in self

    @property
    def action_id(self) -> str | None:
        """The ``ActionID`` this message answers, if any."""
        return self.get("ActionID")

    @property
    def output(self) -> list[str]:
        """Command output lines (``Output:`` lines of Asterisk 14+, or the body of ``Response: Follows``)."""
        return self.get_all("Output")

    def get_all(self, key: str) -> list[str]:
        """Every value of ``key`` in arrival order (empty list when absent)."""
        repeated = self._repeated
        if repeated is not None:
            values = repeated.get(key)
            if values is not None:
                return list(values)
        value = self.get(key)
        return [] if value is None else [value]

    @property
    def repeated_keys(self) -> Mapping[str, list[str]]:
        """Keys that occurred more than once, with all their values."""
        return self._repeated or {}

    def add(self, key: str, value: str) -> None:
        """Append a value, keeping earlier ones (used by the parser for repeated keys)."""
        if key not in self:
            self[key] = value
            return
        repeated = self._repeated
        if repeated is None:
            repeated = self._repeated = {}
        values = repeated.get(key)
        if values is None:
            repeated[key] = [self[key], value]
        else:
            values.append(value)

    def __repr__(self) -> str:
        return f"AmiMessage({self.name!r}, {dict.__repr__(self)})"


@dataclass(slots=True)
class AmiParserStats:
    """Counters of one parser (or shared by the parsers of successive connections)."""

    bytes: int = 0
    messages: int = 0
    malformed_lines: int = 0
    """Lines without a colon; skipped, the rest of their message kept."""
    malformed_messages: int = 0
    """Blocks with neither ``Event`` nor ``Response``; dropped."""
    oversized: int = 0
    """Messages larger than the parser's maximum; discarded up to their terminator."""
    invalid_utf8: int = 0
    """Messages that were not valid UTF-8; decoded with U+FFFD replacement characters."""


class AmiParser:
    """Incremental AMI framing parser: ``feed(bytes) -> list[AmiMessage]``.

    Feeding the same stream in any chunking yields the same messages. Bare ``\\n`` line endings are
    accepted (everything is normalised to ``\\n`` first; ``bytes.replace`` runs at memory speed). Garbage
    is logged, counted in :attr:`stats` and skipped, never raised: a bad event must not take the AMI
    connection (and with it every agent's screen) down.
    """

    __slots__ = (
        "_expect_banner",
        "_last",
        "_more",
        "_pending",
        "_size",
        "_skip_to_marker",
        "_skipping",
        "_unusual",
        "banner",
        "max_message_size",
        "stats",
    )

    def __init__(
        self,
        *,
        expect_banner: bool = True,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        stats: AmiParserStats | None = None,
    ) -> None:
        self.banner: str | None = None
        """``Asterisk Call Manager/x.y.z`` once received."""
        self.max_message_size = max_message_size
        self.stats = stats if stats is not None else AmiParserStats()
        self._expect_banner = expect_banner
        self._skipping = False
        self._skip_to_marker = False
        self._unusual = expect_banner  # = _expect_banner or _skipping: one check on the hot path
        # The unfinished message, normalised (CRLF -> LF): ``_pending`` + the chunks in ``_more`` (joined
        # only once a terminator arrives, so 1-byte feeds stay linear). ``_last`` is its last byte (-1 when
        # empty): a trailing CR may pair with an LF at the start of the next chunk, a trailing LF may be
        # the first half of a terminator.
        self._pending = b""
        self._more: list[bytes] = []
        self._size = 0
        self._last = -1

    @property
    def banner_pending(self) -> bool:
        """True while the parser still waits for the banner line."""
        return self._expect_banner

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished message."""
        return self._size

    def feed(self, data: bytes) -> list[AmiMessage]:
        """Consume one chunk of the stream and return the messages it completed."""
        if not data:
            return []
        stats = self.stats
        stats.bytes += len(data)
        last = self._last
        if last == 13 and data[0] == 10:  # the raw first byte: an LF made from a CRLF must not count
            # A CRLF split across chunks: drop the CR so the pair becomes one LF, as it would unsplit.
            self._set_pending(self._take_buffer()[:-1])
            last = self._last
        data = data.replace(b"\r\n", b"\n")  # returns ``data`` itself when it holds no CRLF
        if self._unusual:
            data = self._feed_unusual(data)
            if not data:
                return []
            last = -1
        if b"\n\n" not in data and not (last == 10 and data[0] == 10):
            self._hold(data)  # no message completes in this chunk
            return []
        if last < 0:
            buf = data  # the common case with large reads: no copy
        elif self._more:
            self._more.append(data)
            buf = self._take_buffer()
        else:
            buf = self._pending + data
        blocks = buf.split(b"\n\n")
        rest = blocks.pop()
        messages: list[AmiMessage] = []
        append = messages.append
        max_size = self.max_message_size
        block_iter = iter(blocks)
        for block in block_iter:
            if not block:
                continue  # extra blank lines between messages
            follows = block[0] == 82 and block.startswith(_FOLLOWS)  # 82 = "R": cheap pre-check
            if follows and _END_COMMAND not in block:
                glued, rest = self._glue_follows(block, block_iter, rest)
                if glued is None:
                    break  # its output continues in data not received yet
                block = glued
            if len(block) > max_size:
                self._discard_oversized(len(block))
                continue
            try:
                text = block.decode()
            except UnicodeDecodeError as exc:
                text = self._decode_invalid(block, exc)
            if follows:
                append(self._parse_follows(text))
                continue
            lines = text.split("\n")
            # Fast path: every line has ": " and no key repeats -> one C-level dict construction.
            # Anything else (no colon, "Key:value", empty key, repeated key) takes the careful path.
            try:
                message = AmiMessage(map(_SPLIT, lines, _SEPARATOR, _ONCE))
            except ValueError:
                message = self._parse_lines(lines)
            else:
                if len(message) != len(lines) or "" in message:
                    message = self._parse_lines(lines)
            if "Event" in message or "Response" in message:
                append(message)
            else:
                stats.malformed_messages += 1
                log.warning("AMI block with neither Event nor Response dropped: %r", text[:_PREVIEW])
        self._pending = rest
        self._size = size = len(rest)
        self._last = rest[-1] if size else -1
        stats.messages += len(messages)
        if size > max_size + 2:
            self._start_skipping()
        return messages

    def _hold(self, data: bytes) -> None:
        if self._last < 0:
            self._pending = data
        else:
            self._more.append(data)
        self._size += len(data)
        self._last = data[-1]
        if self._size > self.max_message_size + 2:  # +2: a partial terminator may be buffered
            self._start_skipping()

    def _take_buffer(self) -> bytes:
        """The whole unfinished message as one bytes object (the buffer is then empty)."""
        buf = b"".join([self._pending, *self._more]) if self._more else self._pending
        self._set_pending(b"")
        return buf

    def _set_pending(self, rest: bytes) -> None:
        self._pending = rest
        self._more = []
        self._size = len(rest)
        self._last = rest[-1] if rest else -1

    def _feed_unusual(self, data: bytes) -> bytes:
        """Banner expected, or discarding an oversized message: return the bytes left to parse normally
        (the buffer is then empty), or ``b""`` when the chunk was consumed."""
        buf = self._take_buffer() + data
        if self._expect_banner:
            buf = self._take_banner(buf)
            if self._expect_banner:
                self._set_pending(buf)
                return b""
        if self._skipping:
            if self._skip_to_marker:
                # An oversized Follows output: its blank lines are not its end, --END COMMAND-- is.
                marker = buf.find(_END_COMMAND)
                if marker < 0:
                    self._set_pending(buf[-len(_END_COMMAND) :])  # the marker may straddle reads
                    return b""
                buf = buf[marker + len(_END_COMMAND) :]
                self._skip_to_marker = False
            end = buf.find(b"\n\n")
            if end < 0:
                self._set_pending(buf[-2:])  # a possible first half of the terminator (or a CR)
                return b""
            buf = buf[end + 2 :]
            self._skipping = False
        self._unusual = False
        return buf

    def _take_banner(self, buf: bytes) -> bytes:
        """Strip the banner line from the stream's start; leaves ``_expect_banner`` set while incomplete."""
        newline = buf.find(b"\n")
        if newline < 0:
            # A trailing CR may still become part of a CRLF: it does not count towards the line length.
            if len(buf) - buf.endswith(b"\r") > _MAX_BANNER_LINE:
                log.warning("AMI stream does not start with a banner line: %r", buf[:_PREVIEW])
                self._expect_banner = False
            return buf
        self._expect_banner = False
        first_line = buf[:newline].rstrip(b"\r")
        if newline <= _MAX_BANNER_LINE and _BANNER_MARK in first_line:
            self.banner = first_line.decode("utf-8", "replace")
            return buf[newline + 1 :]
        log.warning("AMI stream does not start with a banner line: %r", first_line[:_PREVIEW])
        return buf

    def _start_skipping(self) -> None:
        """The unfinished message is already too big: drop it and everything up to its terminator."""
        self.stats.oversized += 1
        log.warning(
            "AMI message exceeds %d bytes (%d buffered): discarded up to its terminator",
            self.max_message_size,
            self._size,
        )
        buffered = self._take_buffer()
        self._skip_to_marker = buffered.startswith(_FOLLOWS) and _END_COMMAND not in buffered
        self._set_pending(buffered[-len(_END_COMMAND) :] if self._skip_to_marker else buffered[-2:])
        self._skipping = self._unusual = True

    def _discard_oversized(self, size: int) -> None:
        self.stats.oversized += 1
        log.warning("AMI message of %d bytes exceeds %d: discarded", size, self.max_message_size)

    @staticmethod
    def _glue_follows(block: bytes, block_iter: Iterator[bytes], rest: bytes) -> tuple[bytes | None, bytes]:
        """``Response: Follows`` output may contain blank lines: glue blocks up to ``--END COMMAND--``.
        Without the marker yet, return None and put everything back into the unfinished rest."""
        parts = [block]
        for following in block_iter:
            parts.append(following)
            if _END_COMMAND in following:
                return b"\n\n".join(parts), rest
        parts.append(rest)
        return None, b"\n\n".join(parts)

    def _decode_invalid(self, block: bytes, exc: UnicodeDecodeError) -> str:
        self.stats.invalid_utf8 += 1
        log.warning(
            "AMI message is not valid UTF-8 (%s at byte %d); decoded with replacement characters: %r",
            exc.reason,
            exc.start,
            block[:_PREVIEW],
        )
        return block.decode("utf-8", "replace")

    def _parse_lines(self, lines: Iterable[str]) -> AmiMessage:
        """Careful line parser: repeated keys kept, lines without a colon skipped and counted.

        Splits each line at its first ": " exactly like the fast path, so a message parses the same
        whichever path it takes.
        """
        message = AmiMessage()
        for line in lines:
            if not line:
                continue  # blank lines left over from extra newlines between messages
            cut = line.find(": ")
            if cut > 0:
                key, value = line[:cut], line[cut + 2 :]
            else:
                cut = line.find(":")
                if cut <= 0:
                    self.stats.malformed_lines += 1
                    log.warning("AMI line without a key dropped: %r", line[:_PREVIEW])
                    continue
                # "Key:value" / "Key:" (never seen from Asterisk 22, tolerated for proxies and old versions)
                key, value = line[:cut], line[cut + 1 :]
            message.add(key, value)
        return message

    def _parse_follows(self, text: str) -> AmiMessage:
        """``Response: Follows`` (Asterisk < 14 Command): headers, then raw output up to --END COMMAND--."""
        body = text.partition(_END_COMMAND_TEXT)[0]
        lines = body.split("\n")
        if lines[-1] == "":
            lines.pop()  # the newline just before the marker
        message = AmiMessage()
        output_from = len(lines)
        for index, line in enumerate(lines):
            key, sep, value = line.partition(": ")
            if not (sep and key in _FOLLOWS_HEADERS):
                output_from = index
                break
            message.add(key, value)
        for line in lines[output_from:]:
            message.add("Output", line)
        return message


FieldValue = str | int | bool | Iterable[str] | Mapping[str, str] | None
"""An action field: a scalar; an iterable for repeated lines; a mapping for ``Variable: name=value`` lines;
``None`` to omit the field."""


def _check_token(kind: str, text: str) -> str:
    if "\r" in text or "\n" in text:
        raise ValueError(f"AMI {kind} must not contain CR or LF (header injection): {text!r}")
    return text


def _check_key(key: str) -> str:
    if not key or ":" in key or key != key.strip():
        raise ValueError(f"invalid AMI field name: {key!r}")
    return _check_token("field name", key)


def encode_action(
    name: str,
    fields: Mapping[str, FieldValue] | Iterable[tuple[str, FieldValue]] | None = None,
    action_id: str | None = None,
) -> bytes:
    """Serialise one action to bytes ready for the socket.

    Values containing CR or LF raise ``ValueError``: an attacker-controlled value (a caller name, a CRM
    field) must never be able to append its own AMI action such as ``Action: Originate``.
    Booleans are written ``true``/``false``; a mapping value becomes one ``Key: name=value`` line per item
    (Originate's ``Variable``); any other iterable becomes one line per item.
    """
    lines = [f"Action: {_check_token('action name', _check_key(name))}"]
    if action_id is not None:
        lines.append(f"ActionID: {_check_token('ActionID', action_id)}")
    items = fields.items() if isinstance(fields, Mapping) else (fields or ())
    for key, value in items:
        _check_key(key)
        if key.lower() in ("action", "actionid"):
            raise ValueError(f"{key} is set by encode_action's own arguments, not by a field")
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"{key}: {'true' if value else 'false'}")
        elif isinstance(value, str | int):
            lines.append(f"{key}: {_check_token('value', str(value))}")
        elif isinstance(value, Mapping):
            for var_name, var_value in value.items():
                if not var_name or "=" in var_name:
                    raise ValueError(f"invalid variable name: {var_name!r}")
                lines.append(f"{key}: {_check_token('value', f'{var_name}={var_value}')}")
        else:
            for item in value:
                lines.append(f"{key}: {_check_token('value', str(item))}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode()
