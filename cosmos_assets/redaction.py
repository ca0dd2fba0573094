"""Secrets stay out of everything we print or store: which names are secret, and redacted copies.

``shell_join`` is the only way an argv becomes a shell string in this package; it quotes every element.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import overload

_SECRET_WORDS = (
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSPHRASE",
    "CREDENTIAL",
    "WEBHOOK",
)  # a webhook URL is its own credential
_PATH_LIKE_SUFFIXES = ("PATH", "_DIR", "_FILE")
_ASSIGNMENT = re.compile(r"^(?P<prefix>-e|--env=|)(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$", re.DOTALL)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says its value is a secret (HF_TOKEN, AWS_SECRET_ACCESS_KEY...).

    Names with KEY are secret unless they look like a path (SSH_KEY_PATH, KEY_FILE): those hold a location.
    """
    upper = name.upper()
    if any(word in upper for word in _SECRET_WORDS):
        return True
    return "KEY" in upper and not upper.endswith(_PATH_LIKE_SUFFIXES)


def shell_join(argv: Sequence[str]) -> str:
    """One shell command line from argv, every element quoted."""
    return " ".join(shlex.quote(str(arg)) for arg in argv)


def _redact_arg(arg: str) -> str:
    match = _ASSIGNMENT.match(arg)
    if match and is_secret_name(match["name"]):
        return f"{match['prefix']}{match['name']}=***"
    return arg


@overload
def redacted(value: Mapping[str, str]) -> dict[str, str]: ...
@overload
def redacted(value: str) -> str: ...
@overload
def redacted(value: Sequence[str]) -> list[str]: ...
def redacted(value: Mapping[str, str] | Sequence[str] | str) -> dict[str, str] | list[str] | str:
    """A copy with the values of secret-looking variables replaced by ***.

    Takes an environment mapping, an argv list, or a shell command line (re-quoted after redaction).
    """
    if isinstance(value, Mapping):
        return {name: "***" if is_secret_name(name) else v for name, v in value.items()}
    if isinstance(value, str):
        return shell_join([_redact_arg(arg) for arg in shlex.split(value)])
    return [_redact_arg(arg) for arg in value]


_ASSIGNMENT_IN_TEXT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)=(\S+)")


def redacted_message(text: str) -> str:
    """Free text (an error message, a log line) with every ``SECRET_NAME=value`` shown as ``SECRET_NAME=***``."""
    return _ASSIGNMENT_IN_TEXT.sub(lambda m: f"{m[1]}=***" if is_secret_name(m[1]) else m[0], text)


def url_secret_parts(url: str) -> list[str]:
    """The parts of a URL that can be its credential (a webhook's path or query is): the URL, its path, query,
    fragment and user info, raw and percent-decoded. For :func:`without_secrets`; nothing here is ever shown."""
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url)
        pieces = [url, parts.path, parts.query, parts.fragment, parts.netloc.rpartition("@")[0]]
    except ValueError:  # not even splittable: the whole text is the secret
        pieces = [url]
    pieces += [unquote(piece) for piece in pieces]
    return [piece for piece in dict.fromkeys(pieces) if len(piece) > 1]


def without_secrets(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every occurrence of each secret (the longest first) shown as ***; empty secrets are ignored."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def first_line(error: BaseException) -> str:
    """An error's first line (its type's name when it has no text): how a host or a step names what went wrong."""
    return (str(error).splitlines() or [type(error).__name__])[0]
