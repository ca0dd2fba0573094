"""The paramiko internals sftp_wire.py relies on still exist with the call shape it uses.

sftp_wire is the only module that reaches into paramiko (pipelined SFTP requests); pyproject.toml pins paramiko
below its next major version. A paramiko upgrade that breaks one of these fails here, by name, instead of
corrupting a transfer.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import paramiko
import paramiko.sftp
import pytest

from cosmos_assets.machines import sftp_wire

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _resolve(dotted: str) -> object:
    owner, _, name = dotted.rpartition(".")
    obj: object = paramiko
    for part in owner.split(".")[1:]:
        obj = getattr(obj, part)
    return getattr(obj, name)


def _shape(func: object) -> tuple[str, ...]:
    names = []
    for p in inspect.signature(func).parameters.values():  # type: ignore[arg-type]
        names.append(f"*{p.name}" if p.kind is inspect.Parameter.VAR_POSITIONAL else p.name)
    return tuple(names)


@pytest.mark.parametrize("dotted", sorted(sftp_wire.PARAMIKO_INTERNALS))
def test_each_private_callable_exists_with_the_parameters_we_pass(dotted: str) -> None:
    assert _shape(_resolve(dotted)) == sftp_wire.PARAMIKO_INTERNALS[dotted]


def test_the_list_names_every_private_call_in_sftp_wire() -> None:
    source = Path(sftp_wire.__file__).read_text()
    used = set(re.findall(r"\b(?:sftp|paramiko\.SFTPAttributes)\.(_[a-z]\w*)\(", source))
    listed = {dotted.rpartition(".")[2] for dotted in sftp_wire.PARAMIKO_INTERNALS}
    assert used == listed


def test_responses_reach_our_sink_through_async_response() -> None:
    """_read_response hands a response to the object passed to _async_request as ``fileobj._async_response(t, msg, num)``."""
    source = inspect.getsource(paramiko.SFTPClient._read_response)
    assert "fileobj._async_response(t, msg, num)" in source
    assert "self._expecting[num] = fileobj" in inspect.getsource(paramiko.SFTPClient._async_request)
    assert "int64" in inspect.getsource(paramiko.SFTPClient._async_request)  # offsets are sent as int64


def test_request_returns_type_and_message() -> None:
    source = inspect.getsource(paramiko.SFTPClient._request)
    assert "return self._read_response(num)" in source


def test_open_files_keep_their_server_handle() -> None:
    assert "self.handle = handle" in inspect.getsource(paramiko.SFTPFile.__init__)


def test_sftp_protocol_constants() -> None:
    expected = {
        "CMD_STATUS": 101,
        "CMD_DATA": 103,
        "CMD_ATTRS": 105,
        "CMD_EXTENDED": 200,
        "CMD_EXTENDED_REPLY": 201,
        "CMD_READ": 5,
        "CMD_WRITE": 6,
        "CMD_STAT": 17,
        "SFTP_OK": 0,
        "SFTP_EOF": 1,
        "SFTP_NO_SUCH_FILE": 2,
    }
    assert {name: getattr(paramiko.sftp, name) for name in expected} == expected
    assert issubclass(paramiko.sftp.int64, int)


def test_paramiko_is_pinned_below_the_next_major_and_the_installed_one_fits() -> None:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    spec = next(d for d in deps if d.startswith("paramiko"))
    match = re.fullmatch(r"paramiko>=(\d+)\.(\d+),<(\d+)", spec.replace(" ", ""))
    assert match, f"pin paramiko as >=X.Y,<X+1 (sftp_wire uses its internals), not {spec!r}"
    low_major, low_minor, below = int(match[1]), int(match[2]), int(match[3])
    assert below == low_major + 1
    major, minor = (int(x) for x in paramiko.__version__.split(".")[:2])
    assert (low_major, low_minor) <= (major, minor) and major < below
