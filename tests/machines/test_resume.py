"""The resume logic in plain Python: ranges kept and missing, block checks, the landed record, the reconnect budget."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from cosmos_assets.machines.ssh_link import HostLinkLostError, LinkDropped, SshLink
from cosmos_assets.machines.ssh_target import SshTarget
from cosmos_assets.machines.transfer_resume import (
    CHECK_BLOCK,
    MAX_CHECK_BLOCKS,
    Landed,
    LandedParts,
    block_spans,
    check_block,
    clipped,
    kept_blocks,
    local_block_hashes,
    merged,
    missing,
    partial_folders,
    prefix_length,
    split,
    total,
)


def test_ranges_merge_and_their_complement_covers_the_file_exactly() -> None:
    assert merged([(10, 5), (0, 4), (4, 2), (14, 10), (30, 0)]) == [(0, 6), (10, 14)]
    assert missing(30, [(10, 5), (0, 4), (4, 2), (14, 10)]) == [(6, 4), (24, 6)]
    assert missing(10, []) == [(0, 10)] and missing(10, [(0, 10)]) == [] and missing(0, []) == []
    assert missing(10, [(8, 100)]) == [(0, 8)]  # kept ranges past the end are ignored
    assert clipped([(0, 4), (6, 10), (20, 3)], 12) == [(0, 4), (6, 6)]
    assert prefix_length([(0, 4), (4, 3), (9, 1)]) == 7 and prefix_length([(1, 4)]) == 0 and prefix_length([]) == 0
    assert split([(0, 10), (15, 3)], 4) == [(0, 4), (4, 4), (8, 2), (15, 3)]
    assert total([(0, 4), (6, 6)]) == 10


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 100])
def test_kept_and_missing_always_add_up_to_the_file(size: int) -> None:
    kept = [(1, 2), (5, 3), (50, 60)]
    todo = missing(size, kept)
    assert total(clipped(kept, size)) + total(todo) == size
    covered = sorted({b for start, length in [*clipped(kept, size), *todo] for b in range(start, start + length)})
    assert covered == list(range(size))


def test_block_spans_and_local_block_hashes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    assert block_spans(10, 4) == [(0, 4), (4, 4), (8, 2)] and block_spans(0, 4) == []
    assert block_spans(10, 4, first=1) == [(4, 4), (8, 2)] and block_spans(10, 4, first=3) == []
    hashes = local_block_hashes(f, 9000, 4096)
    assert hashes == [hashlib.sha256(data[a : a + n]).hexdigest() for a, n in block_spans(9000, 4096)]
    assert local_block_hashes(f, 9000, 4096, first=1) == hashes[1:]


def test_a_part_is_checked_in_small_blocks_but_never_too_many() -> None:
    assert check_block(0) == check_block(5) == check_block(MAX_CHECK_BLOCKS * CHECK_BLOCK) == CHECK_BLOCK
    huge = 10 * 1024**3
    assert check_block(huge) % CHECK_BLOCK == 0 and -(-huge // check_block(huge)) <= MAX_CHECK_BLOCKS


def test_kept_blocks_keeps_only_matching_blocks_and_distrusts_a_wrong_answer() -> None:
    local = ["a", "b", "c", "d"]
    assert kept_blocks(14, 4, ["a", "x", "c", "d"], local) == [(0, 4), (8, 6)]
    assert kept_blocks(14, 4, ["x", "b", "c", "y"], local) == [(4, 8)]
    assert kept_blocks(14, 4, ["a", "b"], local) == []  # the remote said too little: nothing is trusted
    assert kept_blocks(14, 4, local, local) == [(0, 14)]
    assert kept_blocks(14, 4, ["c", "x"], ["c", "d"], first=2) == [(8, 4)]


def test_landed_is_safe_from_several_threads() -> None:
    landed = Landed()

    def writer(channel: int) -> None:
        for block in range(channel, 400, 4):
            landed.add(block * 10, 10)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert landed.ranges() == [(0, 4000)]
    landed.keep_only([(0, 1234)])
    assert landed.ranges() == [(0, 1234)]


def test_a_landed_record_is_dropped_when_the_local_file_changed(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 100)
    parts = LandedParts()
    parts.start("/r/a.bin.part", f, [(0, 40)]).add(40, 20)
    assert parts.recorded("/r/a.bin.part", f).ranges() == [(0, 60)]
    assert parts.recorded("/r/other.part", f) is None
    f.write_bytes(b"y" * 101)  # another file now: what landed is not its prefix
    assert parts.recorded("/r/a.bin.part", f) is None
    assert parts.recorded("/r/a.bin.part", f) is None  # and it stays dropped


def test_partial_folders_are_hidden_siblings_named_after_the_source(tmp_path: Path) -> None:
    staging, parts = partial_folders(tmp_path / "fetched", "/host/outputs/p/run-1")
    assert staging.parent == parts.parent == tmp_path
    assert staging.name.startswith(".fetched.partial-") and parts.name.startswith(".fetched.parts-")
    assert partial_folders(tmp_path / "fetched", "/host/outputs/p/run-1") == (staging, parts)
    assert partial_folders(tmp_path / "fetched", "/host/outputs/p/run-2")[0] != staging


# --------------------------------------------------------------------------- the reconnect budget


class FlakyLink(SshLink):
    """No network: every reconnect works at once; sleeps are recorded."""

    def __init__(self, attempts: int) -> None:
        self.sleeps: list[float] = []
        super().__init__(SshTarget(host="gpu1"), "ssh@gpu1", attempts, sleep=self.sleeps.append)

    def answers(self) -> bool:
        return False

    def reconnect(self) -> None:
        pass


def test_many_blips_with_data_between_them_never_use_up_the_budget() -> None:
    link = FlakyLink(attempts=2)
    done = [0]

    def transfer() -> str:
        while done[0] < 100:  # a blip after every 10 units that landed, 9 blips in all
            done[0] += 1
            link.carried(1)
            if done[0] % 10 == 0 and done[0] < 100:
                raise LinkDropped("EOFError: ")
        return "complete"

    assert link.with_reconnect("upload", transfer, lambda _line: None) == "complete"
    assert link.sleeps == [1.0] * 9  # the backoff starts again each time: data flowed since the last reconnect


def test_blips_with_no_data_between_them_end_the_budget_with_one_clear_line() -> None:
    link = FlakyLink(attempts=3)
    calls = [0]

    def transfer() -> None:
        calls[0] += 1
        if calls[0] == 1:
            link.carried(5)  # data flowed before the first drop only
        raise LinkDropped("EOFError: \n  more")

    with pytest.raises(HostLinkLostError) as caught:
        link.with_reconnect("upload", transfer, lambda _line: None)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("upload: the SSH link to ssh@gpu1 stayed down after 3 reconnects")
    assert "Check the network to the host" in message and "what already arrived is kept" in message
    assert link.sleeps == [1.0, 2.0, 4.0] and calls[0] == 4


@pytest.mark.parametrize("with_openssl", [True, False])
def test_the_remote_block_hash_script_agrees_with_the_local_block_hashes(tmp_path: Path, with_openssl: bool) -> None:
    import shutil
    import subprocess

    from cosmos_assets.machines.remote_hash import BLOCKS_SHA256_SH

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "dd", "sha256sum", "printf") + (("openssl",) if with_openssl else ()):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    f = tmp_path / "-odd name $(x).part"
    for size in (320_000, 65_536, 1):  # the length given is always the whole .part
        f.write_bytes((hashlib.sha256(b"seed").digest() * 10_000)[:size])
        for first in (0, 1, 4):
            out = subprocess.run(
                ["sh", "-c", BLOCKS_SHA256_SH, "sh", str(f), "65536", str(size), str(first)],
                env={"PATH": str(bin_dir)},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert out.split() == local_block_hashes(f, size, 65536, first)
