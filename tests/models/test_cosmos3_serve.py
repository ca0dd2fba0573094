"""Cosmos 3 through its serving app: the request, the service's command, and served vs one-shot (pure logic)."""

from __future__ import annotations

import ast
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from cosmos_assets.machines import ssh_served
from cosmos_assets.machines.job import InferenceJob, RunOutcome, Serving
from cosmos_assets.machines.service_watchdog import idle_expired
from cosmos_assets.models import cosmos3_serve as serve
from cosmos_assets.models.base import BatchItem
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import new_prompt_spec
from cosmos_assets.prompts.spec import TransferSpec, parse_spec
from cosmos_assets.runs.oom import with_offload

STANDIN = Path(__file__).resolve().parents[1] / "standins/cosmos3/cosmos_framework/inference/ray/serve.py"
ONE_SHOT = ["python", "-m", serve.CLI_MODULE, "--parallelism-preset=latency", "-i", "inputs/prompts/p.json", "-o",
            "outputs/p/r1", "--checkpoint-path", "Cosmos3-Nano"]  # fmt: skip


def spec3(resolution: str | None = "480", **extra: object) -> TransferSpec:
    data = new_prompt_spec("shot_a", "a street").to_json_dict()
    block: dict[str, object] = {"size": "nano"}
    if resolution:
        block["resolution"] = resolution
    data.update(extra, cosmos_assets={"model": "cosmos3", "cosmos3": block})
    return parse_spec(data, "p.json")


def test_the_request_is_the_translated_sample_and_refuses_what_the_app_would() -> None:
    request = backend_named("cosmos3").generation("p", spec3(), "r1", 1).spec
    assert serve.service_request(request) == request and request["name"] == "p" and request["resolution"] == "480"
    assert request["depth"]["control_path"] == "/workspace/inputs/videos/shot_a/depth.mp4"  # absolute container paths
    with pytest.raises(ValueError, match="bogus: not a field"):
        serve.service_request({**request, "bogus": 1})
    with pytest.raises(ValueError, match="output_dir: not a field the serving app takes from a client"):
        serve.service_request({**request, "output_dir": "/tmp/x"})
    with pytest.raises(ValueError, match=r"depth.preset_edge_threshold: not a field"):
        serve.service_request({**request, "depth": {"control_path": "/x.mp4", "preset_edge_threshold": "low"}})
    with pytest.raises(ValueError, match="needs a name"):
        serve.service_request({k: v for k, v in request.items() if k != "name"})


def test_the_stand_in_parses_the_same_request_model_as_the_client_sends() -> None:
    tree = ast.parse(STANDIN.read_text())
    fields = next(
        n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "FIELDS"
    )
    names = {elt.value for elt in fields.args[0].elts if isinstance(elt, ast.Constant)}
    assert names | set(serve.HINTS) == serve.REQUEST_FIELDS  # the hints are spread in from HINTS in both


def test_the_service_command_is_the_one_shot_setup_on_the_serving_module() -> None:
    argv = serve.service_argv(ONE_SHOT + ["--no-guardrails"], 1)
    assert argv == (
        "python",
        "-m",
        serve.SERVE_MODULE,
        "--parallelism-preset=latency",
        "--checkpoint-path",
        "Cosmos3-Nano",
        "--no-guardrails",
        "--diffusion-cache",
        "--world-size=1",
    )
    torchrun = ["torchrun", "--nproc-per-node=4", *ONE_SHOT[1:4], "-i", "a.json", "b.json", *ONE_SHOT[6:]]
    four = serve.service_argv(torchrun + ["--no-diffusion-cache"], 4)
    assert four[:3] == ("python", "-m", serve.SERVE_MODULE) and "a.json" not in four and "b.json" not in four
    assert four[-2:] == ("--no-diffusion-cache", "--world-size=4") and "--diffusion-cache" not in four
    with pytest.raises(ValueError, match="not a Cosmos 3 inference command"):
        serve.service_argv(["python", "-m", "other.module"], 1)


@pytest.mark.parametrize(("frames", "chunks"), [(1, 1), (93, 1), (94, 2), (185, 2), (186, 3), (277, 3), (278, 4)])
def test_chunks_follow_upstreams_rule(frames: int, chunks: int) -> None:
    assert serve.chunks(frames) == chunks


@pytest.mark.parametrize(
    ("resolution", "hints", "frames", "size", "fits", "words"),
    [
        ("480", ["depth"], 8, "nano", True, "480p, one control, 8 frames (1 chunk(s)) is about 68 s"),
        ("480", ["depth"], 277, "nano", True, "3 chunk(s)) is about 204 s"),
        ("480", ["depth"], 278, "nano", False, "4 chunk(s)) is about 272 s on an H100"),
        ("720", ["edge"], 8, "nano", False, "720p, one control, 8 frames (1 chunk(s)) is about 244 s"),
        ("480", ["edge", "depth"], 8, "nano", True, "480p, several controls, 8 frames (1 chunk(s)) is about 239 s"),
        ("480", ["edge", "depth"], 94, "nano", False, "several controls, 94 frames (2 chunk(s)) is about 477 s"),
        ("256", ["depth"], 8, "super", True, "is about 49 s"),
        ("480", ["depth"], None, "nano", False, "its frame count is not known here"),
    ],
)
def test_served_only_what_the_app_can_finish_in_its_300_seconds(
    resolution: str, hints: list[str], frames: int | None, size: str, fits: bool, words: str
) -> None:
    spec = {"name": "p", "prompt": "x", "resolution": resolution, **{h: {"control_path": "/w/c.mp4"} for h in hints}}
    call = serve.served_call(spec, ONE_SHOT, 1, size, frames)
    assert call.fits is fits and words in call.why
    assert call.why.startswith("served:" if fits else "one-shot:")
    if not fits and frames is not None:
        assert "300 s" in call.why


def test_max_frames_caps_the_estimate() -> None:
    spec = {"name": "p", "prompt": "x", "resolution": "480", "depth": {}, "max_frames": 90}
    assert serve.estimate_seconds(spec, "nano", 1000)[1].endswith("90 frames (1 chunk(s))")


def test_the_backend_hands_the_served_call_and_batches_and_offload_retries_stay_one_shot() -> None:
    backend = backend_named("cosmos3")
    request = backend.generation("p", spec3(), "r1", 1, Path("/nonexistent"))
    call = request.invocation.served
    assert call is not None and call.request == request.spec and call.entry_point == serve.SERVE_ENTRY_POINT
    assert not call.fits and "frame count is not known" in call.why  # no clip to count here
    item = BatchItem(prompt="p", spec=spec3(), request=request)
    assert backend.batch_generation("b1", [item], 1).request.invocation.served is None
    assert with_offload(request.invocation, ["--offload-guardrail-models"]).served is None


@dataclass
class FakeHost:
    """The little of an SSH host the choice reads: its serve setting, and whether its checkout has a file."""

    serve: str
    files: set[str] = field(default_factory=lambda: {serve.SERVE_ENTRY_POINT})
    label: str = field(default_factory=lambda: f"gpu-{uuid.uuid4().hex[:8]}")  # the file answer is kept per host

    @property
    def settings(self) -> SimpleNamespace:
        return SimpleNamespace(serve=self.serve)

    def facts(self) -> SimpleNamespace:
        return SimpleNamespace(remote_dir="/srv/cosmos-framework")

    @property
    def link(self) -> SimpleNamespace:
        def run(argv: list[str]) -> tuple[int, str, str]:
            assert argv[:2] == ["test", "-f"]
            return (0 if argv[2].removeprefix("/srv/cosmos-framework/") in self.files else 1), "", ""

        return SimpleNamespace(exec=run)


def job(fits: bool, served: bool = True) -> InferenceJob:
    spec = {"name": "p", "prompt": "x", "resolution": "480" if fits else "720", "depth": {"control_path": "/w/d.mp4"}}
    request = backend_named("cosmos3").generation("p", spec3(), "r1", 1)
    call = serve.served_call(spec, ONE_SHOT, 1, "nano", 8)
    invocation = request.invocation.model_copy(update={"served": call if served else None})
    return InferenceJob(run_id="r1", stage="generate", prompt="p", invocation=invocation, inputs=[])


@pytest.mark.parametrize(
    ("mode", "fits", "files", "served", "words"),
    [
        ("auto", True, None, True, "served: 480p"),
        ("auto", False, None, False, "one-shot: 720p"),
        ("never", True, None, False, "serving is off for this host"),
        ("always", False, None, True, "served (serve: always), although 720p"),
        ("always", True, set(), False, "has no serving app (cosmos_framework/inference/ray/serve.py)"),
    ],
)
def test_served_or_one_shot_per_host_setting(
    mode: str, fits: bool, files: set[str] | None, served: bool, words: str
) -> None:
    host = FakeHost(mode) if files is None else FakeHost(mode, files)
    choice, why = ssh_served.serve_choice(host, job(fits))  # type: ignore[arg-type]
    assert choice is served and words in why


def test_a_model_without_a_serving_app_runs_as_before_and_says_nothing() -> None:
    assert ssh_served.serve_choice(FakeHost("always"), job(True, served=False)) == (False, "")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("now", "ready", "last", "busy", "expired"),
    [
        (1000.0, None, None, None, False),  # still loading: never stopped for idleness
        (1000.0, 900.0, None, None, True),  # loaded 100 s ago, no request since: idle 60 s reached
        (1000.0, 900.0, 950.0, None, False),  # a request ended 50 s ago
        (1000.0, 900.0, 940.0, None, True),  # ... 60 s ago
        (1000.0, 900.0, 900.0, 990.0, False),  # a request is running
        (5000.0, 900.0, 900.0, 990.0, True),  # its busy marker is stale (the client died): idle since it was set
    ],
)
def test_the_idle_rule_with_a_forced_clock(
    now: float, ready: float | None, last: float | None, busy: float | None, expired: bool
) -> None:
    assert idle_expired(now, ready, last, busy, idle_seconds=60.0, busy_stale_seconds=3600.0) is expired


@pytest.mark.parametrize(
    ("serving", "served_by", "load"),
    [
        (
            Serving(
                mode="served",
                reason="served: 480p",
                service_container="cosmos-service-gpu1-abc",
                service_id="0123456789ab",
                load_seconds=42.5,
            ),
            "service 0123456789ab",
            42.5,
        ),
        (
            Serving(
                mode="served",
                reason="served: 480p",
                service_container="cosmos-service-gpu1-abc",
                service_id="0123456789ab",
            ),
            "service 0123456789ab",
            None,
        ),
        (Serving(mode="one-shot", reason="one-shot: 720p ... 300 s"), "one-shot", None),
    ],
)
def test_record_history_and_metadata_say_which_served_the_run(
    tmp_path: Path, serving: Serving, served_by: str, load: float | None
) -> None:
    from cosmos_assets.defs.assets.run_metadata import serving_metadata
    from tests.runs.test_record import _record

    record = _record(tmp_path, model="cosmos3")
    now = datetime.now(UTC)
    record.ran(
        ["docker", "run"],
        RunOutcome(exit_code=0, command=["docker", "run"], started_at=now, finished_at=now, serving=serving),
    )
    record.state = "succeeded"
    assert record.serving == serving and record.history().served_by == served_by
    meta = serving_metadata(record)
    assert meta["served_by"] == served_by and meta["served_why"] == serving.reason
    if serving.mode == "served":
        assert record.model_load_seconds == load
        assert meta["service_load_seconds"] == (load if load is not None else "(loaded already)")
    else:
        assert "service_load_seconds" not in meta
