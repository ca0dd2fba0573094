"""cosmos-assets subcommands: the seed's scripts, with errors that name the file, frame or field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest

from cosmos_assets.cli import main
from cosmos_assets.media import probe_video, write_png
from cosmos_assets.media.sample_render import make_sample_render
from tests.project_factory import TINY, make_project


@pytest.fixture
def project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("COSMOS_PROJECT_ROOT", str(root))
    return root


def test_convert_writes_three_videos_with_a_frame_limit(project_root: Path, capsys) -> None:
    render = project_root / "render"
    make_sample_render(render, **TINY)
    assert main(["convert", str(render), "shot_a", "--frames", "5"]) == 0
    for modality in ("color", "depth", "segmentation"):
        info = probe_video(project_root / "inputs/videos/shot_a" / f"{modality}.mp4")
        assert (info.frames, info.width, info.height) == (5, TINY["width"], TINY["height"])


def test_convert_names_the_missing_frame(project_root: Path, capsys) -> None:
    render = project_root / "render"
    seq = make_sample_render(render, **TINY)
    gap = seq.first_frame + 3
    (render / f"depth.{gap:04d}.png").unlink()
    assert main(["convert", str(render), "shot_b"]) == 1
    err = capsys.readouterr().err
    assert f"depth.{gap:04d}.png" in err and str(gap) in err
    assert not (project_root / "inputs/videos/shot_b").exists()


def test_convert_names_the_frame_of_another_size(project_root: Path, capsys) -> None:
    import numpy as np

    render = project_root / "render"
    seq = make_sample_render(render, **TINY)
    odd = render / f"segmentation.{seq.first_frame + 1:04d}.png"
    write_png(odd, np.zeros((TINY["height"] + 2, TINY["width"], 3), np.uint8))
    assert main(["convert", str(render), "shot_c"]) == 1
    err = capsys.readouterr().err
    assert odd.name in err and f"{TINY['width']}x{TINY['height'] + 2}" in err


def test_validate_names_file_field_and_fix(project_root: Path, capsys) -> None:
    bad = project_root / "bad.json"
    bad.write_text(json.dumps({"prompt": "x", "input_video_path": "a.mp4", "depth": {"control_weight": -0.2}}))
    assert main(["validate", "--schema-only", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.json" in err and "depth.control_weight" in err and ">= 0" in err


def test_validate_checks_the_files_a_spec_points_at(project_root: Path, capsys) -> None:
    layout = make_project(project_root)
    assert main(["validate", str(layout.prompt_file("tiny_prompt"))]) == 0
    (layout.shot_videos_dir("tiny_shot") / "depth.mp4").unlink()
    assert main(["validate", str(layout.prompt_file("tiny_prompt"))]) == 1
    assert "depth.input_control" in capsys.readouterr().err


def test_new_prompt_and_duplicate_never_overwrite(project_root: Path, capsys) -> None:
    assert main(["new-prompt", "shot_x", "neon night"]) == 0
    first = Path(capsys.readouterr().out.strip())
    spec = json.loads(first.read_text())
    assert spec["prompt"] == "neon night"
    assert spec["seg"]["input_control"] == "inputs/videos/shot_x/segmentation.mp4"
    assert main(["new-prompt", "--duplicate", str(first)]) == 0
    second = Path(capsys.readouterr().out.strip())
    assert second != first and second.read_bytes() == first.read_bytes()
    assert main(["new-prompt", "shot_x", "other", "--name", first.stem]) == 1
    assert json.loads(first.read_text())["prompt"] == "neon night"


def test_command_prints_what_the_preview_host_would_run(project_root: Path, capsys, monkeypatch) -> None:
    layout = make_project(project_root)
    monkeypatch.setenv("COSMOS_HOST", "preview")
    assert main(["command", str(layout.prompt_file("tiny_prompt"))]) == 0
    out = capsys.readouterr().out
    assert "preview@local" in out and ".cosmos_assets/preview_model.py" in out  # the staged preview program
    assert "--controlnet_specs inputs/prompts/tiny_prompt.json" in out and "=inputs" not in out
    assert not layout.output_dir("tiny_prompt").exists(), "a dry run must not run anything"
    assert main(["command", "tiny_prompt"]) == 0  # a prompt's name works as well as its path
    assert "--controlnet_specs inputs/prompts/tiny_prompt.json" in capsys.readouterr().out
    assert main(["command", "no_such_prompt"]) == 1


def test_command_for_the_upscale_needs_a_generated_video(project_root: Path, capsys) -> None:
    layout = make_project(project_root)
    assert main(["command", str(layout.prompt_file("tiny_prompt")), "--upscale", "0.6"]) == 1
    assert "materialize generated_videos" in capsys.readouterr().err


def test_console_script_is_installed_and_runs() -> None:
    script = Path(sys.executable).with_name("cosmos-assets")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0 and "new-prompt" in result.stdout and "validate" in result.stdout


def test_new_prompt_name_must_stay_in_the_prompts_folder(project_root: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["new-prompt", "shot_x", "text", "--name", "../escaped"])
    assert exited.value.code == 2
    assert "--name" in capsys.readouterr().err
    assert not (project_root / "inputs" / "escaped.json").exists()


@pytest.mark.parametrize(
    "argv", [["convert", "render", "../../etc"], ["new-prompt", "../x", "text"], ["sample-render", "--shot", ".hidden"]]
)
def test_shot_and_prompt_names_must_be_plain(project_root: Path, capsys, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "is not a plain name" in capsys.readouterr().err
    assert not any(project_root.rglob("*.mp4")) and not (project_root / "etc").exists()


def test_validate_prints_the_spec_warnings(project_root: Path, capsys) -> None:
    spec = project_root / "warn.json"
    spec.write_text(
        json.dumps(
            {"prompt": "x", "input_video_path": "a.mp4", "vis": {"control_weight": 0.3, "control_weight_prompt": "car"}}
        )
    )
    assert main(["validate", "--schema-only", str(spec)]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "control_weight_prompt" in err


def test_write_spec_if_absent_never_replaces_a_file(tmp_path: Path) -> None:
    from cosmos_assets.prompts.files import new_prompt_spec, write_spec_if_absent

    target = tmp_path / "p.json"
    write_spec_if_absent(new_prompt_spec("s", "first"), target)
    with pytest.raises(FileExistsError):
        write_spec_if_absent(new_prompt_spec("s", "second"), target)
    assert json.loads(target.read_text())["prompt"] == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]


def test_register_refuses_a_throwaway_instance(project_root: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["register"])
    assert "DAGSTER_HOME is not set" in str(exited.value.code)


def test_register_adds_new_shots_and_prompts_once(project_root: Path, monkeypatch, capsys) -> None:
    home = project_root / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    make_project(project_root)
    assert main(["register"]) == 0
    assert "['tiny_shot']" in capsys.readouterr().out
    assert main(["register"]) == 0
    assert "none new" in capsys.readouterr().out


def _history_with_bad_lines(root: Path) -> Path:
    from datetime import datetime

    from cosmos_assets.runs.history import HistoryRecord, append_history

    log = root / "notes" / "run_history.log"
    for day, prompt in ((1, "first_prompt"), (2, "second_prompt")):
        append_history(
            log,
            HistoryRecord(
                when=datetime(2026, 1, day, 9, tzinfo=UTC),
                run_id=f"r{day}",
                stage="generate",
                prompt=prompt,
                shot="s",
                host="h",
                backend="cosmos-transfer1",
                command="x",
                status="success",
                gpu_seconds=3600,
                cost=2.0,
            ),
        )
        if day == 1:  # between the good lines: a line cut short, bytes that are not UTF-8, JSON of something else
            with open(log, "ab") as handle:
                handle.write(b'{"when": "2026-01-01T10:00:00Z", "run_id": "r9", "stage": "gen\n')
                handle.write(b'{"prompt": "caf\xe9"}\n')
                handle.write(b'{"run_id": "r8"}\n')
    return log


def test_history_prints_the_good_lines_and_names_each_bad_one_on_stderr(tmp_path: Path) -> None:
    log = _history_with_bad_lines(tmp_path)
    script = Path(sys.executable).with_name("cosmos-assets")
    env = {**os.environ, "COSMOS_PROJECT_ROOT": str(tmp_path)}
    for argv, wanted in ((["history"], ["first_prompt", "second_prompt"]), (["history", "--summary"], ["all"])):
        result = subprocess.run([str(script), *argv], capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        assert all(word in result.stdout for word in wanted) and "Traceback" not in result.stderr
        warnings = result.stderr.splitlines()
        assert [w.split(": ", 2)[1] for w in warnings] == [f"{log}:2", f"{log}:3", f"{log}:4"], warnings
        assert "not complete JSON" in warnings[0] and "not UTF-8" in warnings[1] and "field when" in warnings[2]
        assert all(w.startswith("warning: ") and w.endswith("line left out") for w in warnings)
    summary = subprocess.run([str(script), "history", "--summary"], capture_output=True, text=True, env=env).stdout
    assert summary.splitlines()[-1].split() == ["all", "2", "2.000", "4.00"]  # the two good lines, nothing else


def test_history_that_cannot_be_opened_is_one_line_and_exit_1(project_root: Path, capsys) -> None:
    (project_root / "notes" / "run_history.log").mkdir(parents=True)  # a folder where the file should be
    assert main(["history"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read ") and "run_history.log" in err and len(err.splitlines()) == 1
