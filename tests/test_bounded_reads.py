"""Files named by a setting or the user are read bounded: a FIFO, a device or an outsized file is refused in one line.

The hostile cases run the real CLI as a subprocess under a 2 GiB address-space limit, so a regression (reading
/dev/zero without end) fails the test instead of taking the machine's memory; the subprocess timeout is a guard
against a hang (a FIFO opened blocking), not a timed assertion.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cosmos_assets.files import UnsafeReadError, read_bounded
from tests.project_factory import make_project

MEMORY_LIMIT = 2 * 1024**3
GUARD_SECONDS = 300  # a guard against a hang only


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``cosmos-assets ARGS`` in a child limited to 2 GiB of address space."""
    repo = Path(__file__).resolve().parents[1]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMOS_", "REMOTE_"))}
    full_env.update(env, PYTHONPATH=f"{repo}{os.pathsep}{full_env.get('PYTHONPATH', '')}")
    script = Path(sys.executable).with_name("cosmos-assets")  # the console script, as a user runs it
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cosmos_assets.cli"]
    return subprocess.run(
        [*command, *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
        preexec_fn=_limit_memory,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *names: str) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for name in names:
        assert name in lines[0]
    return lines[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yaml"
    os.mkfifo(path)  # no writer ever opens it: a blocking open would wait forever
    return path


# ---------------------------------------------------------------------------------------------------------
# read_bounded itself


def test_a_regular_file_up_to_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, 100, "the thing") == b"x" * 100


def test_one_byte_over_the_limit_is_refused_naming_what_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 101)
    with pytest.raises(UnsafeReadError) as caught:
        read_bounded(path, 100, "COSMOS_SOMETHING")
    message = str(caught.value)
    assert message.startswith(f"COSMOS_SOMETHING {path} is larger than 100 bytes (101 bytes)") and "\n" not in message


def test_a_file_whose_size_says_zero_is_still_read_only_up_to_the_limit() -> None:
    status = Path("/proc/self/status")  # a regular file of st_size 0 that holds more than 16 bytes
    assert status.stat().st_size == 0
    with pytest.raises(UnsafeReadError, match="larger than 16 bytes"):
        read_bounded(status, 16, "the status")
    assert read_bounded(status, 1024 * 1024, "the status").startswith(b"Name:")


def test_a_fifo_without_a_writer_is_refused_at_once(fifo: Path) -> None:
    outcome: list[BaseException | bytes] = []
    reader = threading.Thread(target=lambda: outcome.append(_attempt(fifo)), daemon=True)
    reader.start()
    reader.join(GUARD_SECONDS)  # a guard: a blocking open never returns
    assert not reader.is_alive(), "opening the FIFO blocked"
    assert isinstance(outcome[0], UnsafeReadError) and "is a FIFO (named pipe), not a regular file" in str(outcome[0])


def _attempt(path: Path) -> BaseException | bytes:
    try:
        return read_bounded(path, 1024, "the file")
    except BaseException as error:  # noqa: BLE001 - handed to the test thread
        return error


@pytest.mark.parametrize(("path", "kind"), [("/dev/zero", "a character device"), ("/", "a folder")])
def test_devices_and_folders_are_refused(path: str, kind: str) -> None:
    with pytest.raises(UnsafeReadError, match=f"^the file {path} is {kind}, not a regular file; give the path"):
        read_bounded(Path(path), 1024, "the file")


def test_dev_null_reads_as_the_empty_file() -> None:
    assert read_bounded(Path("/dev/null"), 10, "the file") == b""


def test_a_missing_file_is_the_usual_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "nope", 10, "the file")


# ---------------------------------------------------------------------------------------------------------
# through the real CLI


def test_hosts_with_a_fifo_as_the_hosts_file_fails_in_one_line(fifo: Path, tmp_path: Path) -> None:
    result = run_cli(["hosts"], {"COSMOS_HOSTS_FILE": str(fifo)}, tmp_path)
    line = assert_one_line_error(result, "COSMOS_HOSTS_FILE", str(fifo), "FIFO")
    assert "unset COSMOS_HOSTS_FILE" in line


def test_hosts_with_dev_zero_as_the_hosts_file_fails_in_one_line_without_reading_it(tmp_path: Path) -> None:
    result = run_cli(["hosts"], {"COSMOS_HOSTS_FILE": "/dev/zero"}, tmp_path)
    assert_one_line_error(result, "COSMOS_HOSTS_FILE /dev/zero", "character device")


def test_hosts_with_an_outsized_hosts_file_fails_in_one_line(tmp_path: Path) -> None:
    huge = tmp_path / "hosts.yaml"
    with open(huge, "wb") as handle:  # sparse: 3 GiB on paper, more than the child may hold
        handle.truncate(3 * 1024**3)
    result = run_cli(["hosts"], {"COSMOS_HOSTS_FILE": str(huge)}, tmp_path)
    assert_one_line_error(result, "COSMOS_HOSTS_FILE", str(huge), "larger than 1048576 bytes")


@pytest.mark.parametrize("command", [["validate", "{path}"], ["new-prompt", "--duplicate", "{path}"]])
def test_a_prompt_file_named_on_the_cli_that_is_a_fifo_or_a_device_fails_in_one_line(
    command: list[str], fifo: Path, tmp_path: Path
) -> None:
    layout = make_project(tmp_path / "project")
    for path in (fifo, Path("/dev/zero")):
        args = [part.format(path=path) for part in command]
        result = run_cli(args, {"COSMOS_PROJECT_ROOT": str(layout.root)}, tmp_path)
        assert_one_line_error(result, str(path), "not a regular file")
        assert result.stderr.count(str(path)) == 1, result.stderr  # the file named once, one fix
    assert layout.prompt_names() == ["tiny_prompt"]  # nothing was duplicated
