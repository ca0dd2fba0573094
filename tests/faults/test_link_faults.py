"""The link cut under a transfer and under a running model, against the real sshd (and dockerd), through the
fault proxy. Each ends with a completed transfer or run, or a clear one-line error and nothing under a final name.

Figures: what the proxy carried towards the receiver over both attempts, against the file's size. Beyond the file
go SSH and SFTP framing (well under 1%) and what was in flight at the cut: in the kernel's socket buffers, the SSH
channel windows, the SFTP requests not yet answered (a few MiB). A restart from zero would add all it had sent
before the cut; the retry here sends only what the receiver does not hold.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from cosmos_assets.machines import sftp_parallel, ssh_link
from cosmos_assets.machines import sftp_transfer as sftp_mod
from cosmos_assets.machines.job import StagedFile
from cosmos_assets.machines.sftp_transfer import upload_files
from cosmos_assets.machines.ssh_host import SshHost
from cosmos_assets.machines.ssh_host_settings import SshHostSettings
from cosmos_assets.machines.ssh_link import HostLinkLostError
from cosmos_assets.machines.transfer_resume import LandedParts
from tests.faults.conftest import proxied_link
from tests.faults.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration

MB = 1024 * 1024
SIZE = 32 * MB
CUT = SIZE * 2 // 3


def _file(path: Path, size: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(str(seed).encode()).digest() * (MB // 32)
    with open(path, "wb") as f:
        for at in range(0, size, MB):
            f.write(block[: min(MB, size - at)])
    return path


def _host(target, remote_dir: Path, attempts: int = 4) -> SshHost:
    settings = SshHostSettings(
        remote_dir=str(remote_dir), docker_image="unused:faults", reconnect_attempts=attempts, name="ssh@faulty-host"
    )
    return SshHost(target, settings, link=proxied_link(target, attempts))


@pytest.fixture(params=["one channel", "parallel channels"])
def channels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "parallel channels":
        monkeypatch.setattr(sftp_mod, "PARALLEL_MIN_BYTES", 4 * MB)
        monkeypatch.setattr(sftp_parallel, "PARALLEL_BLOCK", MB)
    else:
        monkeypatch.setattr(sftp_mod, "PARALLEL_MIN_BYTES", 1 << 40)
    return request.param


def test_an_upload_cut_mid_file_resumes_from_what_landed(
    channels: str, fault_proxy: FaultProxy, proxy_target, tmp_path: Path
) -> None:
    local = _file(tmp_path / "local" / "color.mp4", SIZE, 1)
    remote_dir = tmp_path / "remote"
    host = _host(proxy_target, remote_dir)
    try:
        host.facts()
        before = fault_proxy.bytes_up
        fault_proxy.cut_after(CUT, "up", down_for=0.3)
        lines: list[str] = []
        stats = host.upload([StagedFile(local=local, remote="inputs/color.mp4")], lines.append)
    finally:
        host.close()
    item = stats.files[0]
    carried = fault_proxy.bytes_up - before
    print(
        f"\n[figures] upload over {channels}: cut after {CUT} B of {SIZE} B; the retry kept {item.resumed_from} B "
        f"and sent {item.bytes_sent} B; carried in all {carried} B = {carried / SIZE:.3f} x the file"
    )
    assert fault_proxy.cuts == 1 and any("reconnected to ssh@faulty-host" in line for line in lines)
    assert (remote_dir / "inputs" / "color.mp4").read_bytes() == local.read_bytes()
    assert not (remote_dir / "inputs" / "color.mp4.part").exists()
    assert 0 < item.resumed_from and item.resumed_from + item.bytes_sent == SIZE
    assert item.resumed_from >= CUT // 2 and carried < SIZE + CUT // 2  # a restart would carry SIZE + CUT


def test_a_download_cut_mid_file_resumes_from_what_arrived(
    fault_proxy: FaultProxy, proxy_target, tmp_path: Path
) -> None:
    remote_dir = tmp_path / "remote"
    out = remote_dir / "outputs" / "p" / "run-1"
    big = _file(out / "output.mp4", SIZE, 2)
    (out / "prompt.txt").write_text("a prompt")
    local = tmp_path / "local" / "fetched"
    local.parent.mkdir()
    host = _host(proxy_target, remote_dir)
    try:
        host.facts()
        before = fault_proxy.bytes_down
        fault_proxy.cut_after(CUT, "down", down_for=0.3)
        lines: list[str] = []
        stats = host.download("outputs/p/run-1", local, lines.append)
    finally:
        host.close()
    carried = fault_proxy.bytes_down - before
    item = next(f for f in stats.files if f.local.endswith("output.mp4"))
    print(
        f"\n[figures] download: cut after {CUT} B of {SIZE} B; the retry kept {item.resumed_from} B and fetched "
        f"{item.bytes_sent} B; carried in all {carried} B = {carried / SIZE:.3f} x the file"
    )
    assert fault_proxy.cuts == 1 and any("reconnected" in line for line in lines)
    assert (local / "output.mp4").read_bytes() == big.read_bytes() and (local / "prompt.txt").read_text() == "a prompt"
    assert 0 < item.resumed_from and item.resumed_from + item.bytes_sent == SIZE
    assert item.resumed_from >= CUT // 2 and carried < SIZE + CUT // 2
    assert sorted(p.name for p in local.parent.iterdir()) == ["fetched"]  # no partial folder left


def test_many_short_blips_never_use_up_a_small_reconnect_budget(
    fault_proxy: FaultProxy, proxy_target, tmp_path: Path
) -> None:
    local = _file(tmp_path / "local" / "depth.mp4", SIZE, 3)
    remote_dir = tmp_path / "remote"
    host = _host(proxy_target, remote_dir, attempts=1)  # a second drop in a row would end it
    try:
        host.facts()
        fault_proxy.cut_after(SIZE // 4, "up", times=3)
        stats = host.upload([StagedFile(local=local, remote="inputs/depth.mp4")], lambda _line: None)
    finally:
        host.close()
    assert fault_proxy.cuts == 3
    assert (remote_dir / "inputs" / "depth.mp4").read_bytes() == local.read_bytes()
    assert stats.files[0].resumed_from > 0


def test_a_link_that_never_comes_back_fails_in_one_line_then_the_next_attempt_resumes(
    fault_proxy: FaultProxy, proxy_target, tmp_path: Path
) -> None:
    local = _file(tmp_path / "local" / "seg.mp4", SIZE, 4)
    remote_dir = tmp_path / "remote"
    final, part = remote_dir / "inputs" / "seg.mp4", remote_dir / "inputs" / "seg.mp4.part"
    host = _host(proxy_target, remote_dir, attempts=2)
    try:
        host.facts()
        fault_proxy.cut_after(SIZE // 2, "up", down_for=600)
        with pytest.raises(HostLinkLostError) as caught:
            host.upload([StagedFile(local=local, remote="inputs/seg.mp4")], lambda _line: None)
    finally:
        host.close()
    message = str(caught.value)
    assert "\n" not in message and message.startswith("upload: the SSH link to ssh@faulty-host stayed down after 2")
    assert "Check the network to the host" in message
    assert not final.exists() and 0 < part.stat().st_size <= SIZE  # nothing under the final name
    theirs, mine = part.read_bytes(), local.read_bytes()  # the "remote" is this machine: what matches, 1 MiB-wise
    matching = sum(
        len(theirs[at : at + MB])
        for at in range(0, len(theirs), MB)
        if theirs[at : at + MB] == mine[at : at + len(theirs[at : at + MB])]
    )

    fault_proxy.clear()  # the network is back; a new process knows nothing of the first one's record
    again = _host(proxy_target, remote_dir)
    try:
        item = again.upload([StagedFile(local=local, remote="inputs/seg.mp4")], lambda _line: None).files[0]
    finally:
        again.close()
    assert final.read_bytes() == local.read_bytes() and not part.exists()
    assert item.resumed_from == matching > 0  # exactly the blocks that had landed whole, checked by sha256


def test_a_download_past_the_budget_leaves_no_final_name_and_the_next_attempt_resumes(
    fault_proxy: FaultProxy, proxy_target, tmp_path: Path
) -> None:
    remote_dir = tmp_path / "remote"
    big = _file(remote_dir / "outputs" / "p" / "run-2" / "output.mp4", SIZE, 5)
    local = tmp_path / "local" / "fetched"
    local.parent.mkdir()
    host = _host(proxy_target, remote_dir, attempts=1)
    try:
        host.facts()
        fault_proxy.cut_after(SIZE // 2, "down", down_for=600)
        with pytest.raises(HostLinkLostError, match="^download: the SSH link to ssh@faulty-host stayed down"):
            host.download("outputs/p/run-2", local, lambda _line: None)
    finally:
        host.close()
    assert not local.exists()
    fault_proxy.clear()
    again = _host(proxy_target, remote_dir)
    try:
        stats = again.download("outputs/p/run-2", local, lambda _line: None)
    finally:
        again.close()
    assert (local / "output.mp4").read_bytes() == big.read_bytes()
    assert stats.files[0].resumed_from > 0
    assert sorted(p.name for p in local.parent.iterdir()) == ["fetched"]


def test_a_black_holed_link_is_noticed_and_the_upload_resumes(
    fault_proxy: FaultProxy, proxy_target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sftp_mod, "TRANSFER_STALL_S", 1.0)
    monkeypatch.setattr(ssh_link, "PROBE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(sftp_mod, "PARALLEL_MIN_BYTES", 1 << 40)
    local = _file(tmp_path / "local" / "vis.mp4", SIZE, 6)
    remote = tmp_path / "remote" / "vis.mp4"
    link = proxied_link(proxy_target, 3)
    stalled: list[float] = []

    def stall_once(done: int, _total: int) -> None:
        if done > SIZE // 3 and not stalled:
            stalled.append(time.monotonic())
            fault_proxy.stall()  # the open connection stops carrying bytes; nothing is closed

    landed = LandedParts()
    lines: list[str] = []
    try:
        stats = link.with_reconnect(
            "upload", lambda: upload_files(link, [(local, str(remote))], stall_once, landed), lines.append
        )
    finally:
        fault_proxy.unstall()
        link.close()
    assert stalled and any("lost during upload" in line for line in lines)
    assert remote.read_bytes() == local.read_bytes()
    assert stats.files[0].resumed_from > 0


# --------------------------------------------------------------------------- mid-inference (real dockerd)
# The long cut (down past the budget: the step fails, the container is left running, the next attempt adopts it)
# is tests/integration/test_durable_runs.py::test_a_link_down_past_the_reconnect_budget_leaves_the_container_for_the_next_attempt.


def test_a_short_cut_mid_inference_completes_with_one_container_and_every_log_line_once(
    preview_host: dict[str, object], fault_proxy: FaultProxy, sshd, docker_client, tmp_path: Path
) -> None:
    from cosmos_assets.defs.resources import SshGpuHost
    from cosmos_assets.models.registry import backend_named
    from cosmos_assets.runs.runner import run_generation
    from tests.faults.conftest import proxied_host_fields
    from tests.integration.test_ssh_host import container_starts
    from tests.project_factory import make_project

    project = make_project(tmp_path / "project", prompt="tiny_prompt")
    fields = {
        **preview_host,
        **proxied_host_fields(fault_proxy, sshd, tmp_path),
        "reconnect_attempts": 6,
        "container_env": {"COSMOS_PREVIEW_STEP_SECONDS": "0.1"},
    }
    resource = SshGpuHost(**fields)
    target = resource.ssh_target()
    machine = SshHost(target, resource.host_settings(), link=proxied_link(target, 6, resource.label))
    started = time.time()
    lines: list[str] = []

    def cut_at_step_4(line: str) -> None:
        lines.append(line)
        if "step 4/" in line and not fault_proxy.cuts:
            fault_proxy.cut_for(1.0)

    try:
        result = run_generation(project, machine, backend_named("preview"), "tiny_prompt", log=cut_at_step_4)
    finally:
        machine.close()
    assert fault_proxy.cuts == 1 and result.record.state == "succeeded"
    assert any("re-attaching" in line for line in lines)
    assert len(container_starts(docker_client, started, "tiny_prompt", "generate")) == 1
    steps = [line for line in lines if "generate chunk 1/1 step " in line]
    assert len(steps) == len(set(steps)) == 35  # every line once across the re-attach


# --------------------------------------------------------------------------- what a cut prints


def test_failed_reconnects_say_one_line_each_and_print_no_paramiko_traceback(
    fault_proxy: FaultProxy,
    proxy_target,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The host unreachable until four reconnects failed (each reset as soon as it is accepted, as a host whose sshd
    restarts answers), then back: one line per attempt, and none of paramiko's tracebacks above DEBUG (without the
    lowering, 10 to 12 tracebacks for such a cut)."""
    import logging

    link = proxied_link(proxy_target, 8)
    caplog.set_level(logging.DEBUG, logger="paramiko")
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if sum("failed (attempt" in seen for seen in lines) == 4:
            fault_proxy.up()

    try:
        link.exec(["true"])
        fault_proxy.down()  # cuts the open connection, resets every new one
        assert link.with_reconnect("listing", lambda: link.exec(["echo", "back"]), log)[1] == "back\n"
    finally:
        link.close()
    failed = [line for line in lines if "reconnect to ssh@faulty-host failed" in line]
    assert len(failed) == 4 and all("\n" not in line and "(attempt " in line for line in failed), lines
    assert len([line for line in lines if "lost during listing" in line]) == 1  # the loss said once, then each attempt
    assert all("Traceback" not in line and "Check REMOTE_HOST" not in line for line in lines), lines
    loud = [r.getMessage() for r in caplog.records if r.name.startswith("paramiko") and r.levelno >= logging.WARNING]
    assert not [m for m in loud if "Traceback" in m or "Error reading SSH protocol banner" in m], loud
    assert "Traceback" not in capfd.readouterr().err
