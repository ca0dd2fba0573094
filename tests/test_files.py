"""files.py: the one atomic write, no-replace rename, move-aside and verified copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosmos_assets.files import atomic_write_text, copy_verified, move_aside, rename_no_replace, sha256_file


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
