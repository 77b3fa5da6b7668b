"""Read and check ``ORCHESTRATOR_API_KEY``, the bearer key that the orchestrator and its consumers share.

Both sides read the key through ``read_api_key``, so a value that one side
accepts, the other side accepts too. The key travels in an HTTP header
(``Authorization: Bearer <key>``), and RFC 9110, section 5.5, makes a field
value with a control character invalid. Whitespace around the key is removed
with a warning, because a key file saved with Windows line endings ends in a
CR that ``$(cat file)`` keeps. A key with another control character or a
non-ASCII character inside is rejected. httpx does not send such a header
but raises, and for a CR its error message quotes the whole header.

Messages and logs give the variable, a position, a length and the kind of a
bad character, never the key or any of its characters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from rewardpilot.logs import get_logger

API_KEY_ENV = "ORCHESTRATOR_API_KEY"
# ASCII whitespace only: str.strip() without arguments would also remove
# U+001C to U+001F and Unicode spaces, which are better reported as invalid.
SURROUNDING_WHITESPACE = " \t\r\n\v\f"

Role = Literal["consumer", "orchestrator"]

_CONTROL_NAMES = {
    "\x00": "a NUL character (U+0000)",
    "\t": "a tab (U+0009)",
    "\n": "a line feed (LF, U+000A)",
    "\v": "a vertical tab (U+000B)",
    "\f": "a form feed (U+000C)",
    "\r": "a carriage return (CR, U+000D)",
    "\x1b": "an escape character (ESC, U+001B)",
    "\x7f": "a delete character (DEL, U+007F)",
}

log = get_logger("rewardpilot.orchestrator.api_key")

# (source, role, removed, length) of the warnings already logged, so that a
# key read by several parts of one process is reported once.
_warned: set[tuple[str, str, int, int]] = set()


class InvalidApiKeyError(ValueError):
    """An API key that cannot be sent in an HTTP header; the message never contains the key."""


def read_api_key(role: Role, environ: Mapping[str, str] | None = None) -> str | None:
    """Return ``ORCHESTRATOR_API_KEY`` checked by ``check_api_key``, or None when it is unset or empty.

    ``role`` is the side that reads the key: for the orchestrator a key set
    to the empty string logs a warning that authentication is off. Raises
    ``InvalidApiKeyError`` for blanks only and for a bad character.
    """
    value = (os.environ if environ is None else environ).get(API_KEY_ENV)
    if value is None:
        return None
    if value == "":
        if role == "orchestrator":
            _warn_once((API_KEY_ENV, role, 0, 0), f"{API_KEY_ENV} is set but empty, so authentication is off: "
                       "any client can call every endpoint without a key. Set a key, or unset the variable "
                       "if the orchestrator should be open")
        return None
    return check_api_key(value, role=role)


def check_api_key(value: str, *, role: Role, source: str = API_KEY_ENV) -> str:
    """Return ``value`` without surrounding ASCII whitespace, logging a warning when there was any.

    ``source`` names where the value came from, for the messages. Raises
    ``InvalidApiKeyError`` when nothing but whitespace is left, or when the
    key contains a control character or a non-ASCII character.
    """
    key = value.strip(SURROUNDING_WHITESPACE)
    if not key:
        without = "serve" if role == "orchestrator" else "call the orchestrator"
        raise InvalidApiKeyError(
            f"{source} is set to blanks only ({len(value)} whitespace characters), a key no client can send; "
            f"set a real key, or unset it to {without} without auth"
        )

    leading = len(value) - len(value.lstrip(SURROUNDING_WHITESPACE))
    for offset, character in enumerate(key):
        kind = _bad_character_kind(character)
        if kind is not None:
            position = leading + offset + 1
            raise InvalidApiKeyError(
                f"{source} contains an invalid character at position {position} of {len(value)}: {kind}. "
                "A key must be one line of printable ASCII; check the file or command the key came from "
                "and set it again (the key itself is not shown)"
            )

    removed = len(value) - len(key)
    if removed:
        _warn_once((source, role, removed, len(key)),
                   f"{source} has whitespace before or after the key (a key file saved with Windows line "
                   "endings ends in a CR); removed it and used the rest as the key",
                   removed_characters=removed, key_length=len(key))
    return key


def resolve_api_key(api_key: str | None, role: Role) -> str | None:
    """Return the checked ``api_key``, or the key ``read_api_key`` finds when ``api_key`` is None.

    An empty ``api_key`` means no key. Raises ``InvalidApiKeyError`` like ``check_api_key``.
    """
    if api_key is None:
        return read_api_key(role)
    if api_key == "":
        return None
    return check_api_key(api_key, role=role, source="api_key")


def _bad_character_kind(character: str) -> str | None:
    """Return the name, with its article, of a character no bearer key may contain, or None for a usable one."""
    code = ord(character)
    if code > 0x7F:
        return "a non-ASCII character"
    if code < 0x20 or code == 0x7F:
        return _CONTROL_NAMES.get(character, f"a control character (U+{code:04X})")
    return None


def _warn_once(key: tuple[str, str, int, int], message: str, **fields) -> None:
    if key in _warned:
        return
    _warned.add(key)
    log.warning(message, **fields)

