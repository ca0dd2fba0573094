"""files.py: the one atomic write, no-replace rename, move-aside and verified copy; the modes what we write gets."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cosmos_assets import files
from cosmos_assets.files import (
    atomic_write_bytes,
    atomic_write_text,
    copy_verified,
    create_new,
    move_aside,
    new_temp_file,
    new_temp_folder,
    new_temp_path,
    process_umask,
    rename_no_replace,
    sha256_file,
    synced_temp_file,
    umask_file_mode,
    umask_folder_mode,
)


def test_rename_no_replace_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("new")
    (tmp_path / "b").write_text("old")
    with pytest.raises(FileExistsError):
        rename_no_replace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "old" and (tmp_path / "a").exists()


def test_move_aside_keeps_every_earlier_folder(tmp_path: Path) -> None:
    previous = tmp_path / ".previous"
    moved = []
    for content in ("first", "second"):
        folder = tmp_path / "outputs" / "p1"
        folder.mkdir(parents=True)
        (folder / "output.mp4").write_text(content)
        moved.append(move_aside(folder, previous, "20260101_000000_same"))
    assert moved[0] == previous / "p1" / "20260101_000000_same"
    assert moved[1] != moved[0] and moved[1].name.startswith("20260101_000000_same_")
    assert [(m / "output.mp4").read_text() for m in moved] == ["first", "second"]
    with pytest.raises(ValueError, match="plain folder name"):
        move_aside(tmp_path / "outputs", previous, "../escape")


def test_copy_verified_lands_whole_or_not_at_all(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * (3 * 1024 * 1024 + 7))
    seen: list[int] = []
    copy_verified(source, tmp_path / "deep" / "dst.bin", seen.append)
    assert sha256_file(tmp_path / "deep" / "dst.bin") == sha256_file(source) and sum(seen) == source.stat().st_size
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["dst.bin"]


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["b.txt"]


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# A studio's shared folder (002: the group writes too), the usual default (022), a private setup (077).
UMASKS = {0o002: (0o664, 0o775), 0o022: (0o644, 0o755), 0o077: (0o600, 0o700)}


@pytest.mark.parametrize("value", sorted(UMASKS))
def test_the_umask_is_read_without_changing_it(value: int) -> None:
    with umask(value):
        assert process_umask() == value
        assert (umask_file_mode(), umask_folder_mode()) == UMASKS[value]
        assert os.umask(value) == value  # still set: reading it changed nothing


@pytest.mark.parametrize("value", sorted(UMASKS))
def test_every_written_file_and_folder_gets_the_mode_the_umask_allows(tmp_path: Path, value: int) -> None:
    file_mode, folder_mode = UMASKS[value]
    source = tmp_path / "source.bin"
    source.write_bytes(b"a model's clip")
    source.chmod(0o600)  # a file we copy never passes its own mode on
    existing = tmp_path / "existing.json"
    existing.write_text("old")
    existing.chmod(0o600)
    with umask(value):
        atomic_write_bytes(tmp_path / "new" / "record.json", b"{}")  # its folder is made too
        atomic_write_bytes(existing, b"new")  # replacing a 0600 file: the new one has the umask's mode
        create_new(tmp_path / "prompt.json", b"{}")
        copy_verified(source, tmp_path / "copied" / "clip.mp4")
        synced = synced_temp_file(tmp_path, "x", b"data")
        fd, temp = new_temp_file(tmp_path, ".clip.", ".partial.mp4")
        os.close(fd)
        path = new_temp_path(tmp_path, ".grid.", ".partial.mp4")
        folder = new_temp_folder(tmp_path, "wedge-look-")
        moved = move_aside(folder, tmp_path / ".previous", "20260101_000000_abc")
    written = [
        tmp_path / "new" / "record.json",
        existing,
        tmp_path / "prompt.json",
        tmp_path / "copied" / "clip.mp4",
        synced,
        temp,
        path,
    ]
    assert {p.name: oct(mode(p)) for p in written} == {p.name: oct(file_mode) for p in written}
    folders = [tmp_path / "new", tmp_path / "copied", moved, moved.parent, tmp_path / ".previous"]
    assert {str(p): oct(mode(p)) for p in folders} == {str(p): oct(folder_mode) for p in folders}
    assert existing.read_bytes() == b"new" and (tmp_path / "copied" / "clip.mp4").read_bytes() == b"a model's clip"


def test_temp_names_are_new_every_time_and_never_follow_a_link(tmp_path: Path) -> None:
    names = {new_temp_path(tmp_path, ".a.", ".tmp").name for _ in range(50)}
    assert len(names) == 50 and all(n.startswith(".a.") and n.endswith(".tmp") for n in names)
    (tmp_path / "elsewhere").mkdir()
    drawn = iter(["taken", "taken", "free"])
    real = files._temp_name
    files._temp_name = lambda directory, prefix, suffix: Path(directory) / f"{prefix}{next(drawn)}{suffix}"
    try:
        (tmp_path / ".x.taken.tmp").symlink_to(tmp_path / "elsewhere" / "target")
        fd, path = new_temp_file(tmp_path, ".x.", ".tmp")  # the taken name (a dangling link) is skipped
        os.close(fd)
    finally:
        files._temp_name = real
    assert path.name == ".x.free.tmp" and not (tmp_path / "elsewhere" / "target").exists()


def test_a_new_folder_in_a_setgid_folder_keeps_its_group_and_the_setgid_bit(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    group = 23456 if os.geteuid() == 0 else os.getegid()  # as root: a spare gid, as on a studio's share
    os.chown(shared, -1, group)
    shared.chmod(0o2775)
    with umask(0o002):
        folder = new_temp_folder(shared, "wedge-")
        atomic_write_bytes(shared / "outputs" / "p" / "spec_used.json", b"{}")
    for made in (folder, shared / "outputs", shared / "outputs" / "p"):
        info = made.stat()
        assert (info.st_gid, oct(stat.S_IMODE(info.st_mode))) == (group, oct(0o2775)), made
    assert (shared / "outputs" / "p" / "spec_used.json").stat().st_gid == group


def test_without_proc_the_umask_is_read_once_and_restored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(files, "_PROC_STATUS", str(tmp_path / "no-proc" / "status"))
    monkeypatch.setattr(files, "_umask_fallback", None)
    with umask(0o027):
        assert process_umask() == 0o027
        assert os.umask(0o027) == 0o027  # put back as it was
    with umask(0o002):
        assert process_umask() == 0o027  # remembered: never set and restored again while threads may be writing
