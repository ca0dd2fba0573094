"""Stand-in for Cosmos 3's serving app ``python -m cosmos_framework.inference.ray.serve`` (NOT the model, no Ray).

Follows the HTTP contract of docs/upstream/cosmos3-serve.md (NVIDIA/cosmos-framework @ 5eee9ed), stdlib only:
- flags: the app's (``--checkpoint-path`` required, ``-o`` required, ``--parallelism-preset``, ``--world-size``,
  setup flag pairs); an unknown flag exits 2 as tyro does;
- a simulated model load (``STANDIN_LOAD_SECONDS``, default 0.5), counted: one line per load appended to
  ``STANDIN_LOADS`` (default ``.standin/loads`` under the working folder, i.e. the checkout), then the ready line
  Ray Serve prints; the app listens on the container's 127.0.0.1:8000 only;
- ``GET /models`` -> ``[""]``, ``GET /info``, ``GET /-/healthz``, ``GET /outputs/<relpath>``;
- ``POST /generate``: the request model parsed strictly (unknown key or hint key, wrong type, missing local file:
  422 with FastAPI's body), no ``name``: 500; one request at a time; writes ``<OUT>/generate_<stamp>_<4hex>/``
  (``sample_args.json`` first, ``vision.mp4``, ``control_<hint>.mp4``, ``sample_outputs.json`` last) and answers the
  ``SampleOutputs`` with files relative to ``<OUT>``; past ``STANDIN_SERVE_LIMIT_SECONDS`` (default 300) a request
  gets 500 while its generation goes on (serve.py:166). ``STANDIN_SERVE_GENERATE_SECONDS`` adds a generation delay.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from inference import BANNER, HINTS, LAYER, output_size, simulate_load  # noqa: E402 - the CLI stand-in
from standin_common import composite_video, copy_file, say  # noqa: E402

HINT_KEYS = {"control_path", "weight"}
HINT_EXTRA = {"edge": {"preset_edge_threshold"}, "blur": {"preset_blur_strength"}}
# OmniSampleOverrides' fields (docs/upstream/cosmos3-serve.md §4); tests compare this list with the client's.
FIELDS = frozenset({
    "output_dir", "model", "extra", "name", "num_outputs", "seed", "tensors_file", "pickle_file", "num_steps",
    "guidance", "guidance_interval", "normalize_cfg", "shift", "sigma_max", "model_mode", "prompt_path", "prompt",
    "negative_prompt", "duration_template", "resolution_template", "negative_metadata_mode", "inverse_duration_template",
    "inverse_resolution_template", "negative_prompt_keep_metadata", "vision_path", "condition_frame_indexes_vision",
    "condition_video_keep", "resolution", "aspect_ratio", "fps", "num_frames", "video_save_quality",
    "image_save_quality", "enable_sound", "sound_path", "action_path", "domain_name", "image_size", "action_chunk_size",
    "raw_action_dim", "view_point", "max_new_tokens", "do_sample", "temperature", "top_k", "top_p",
    "repetition_penalty", "presence_penalty", "video_fps", "control_guidance", "control_guidance_interval", *HINTS,
    "negative_prompt_file", "num_video_frames_per_chunk", "num_conditional_frames", "max_frames",
    "show_control_condition", "show_input", "num_first_chunk_conditional_frames", "share_vision_temporal_positions",
    "emphasize_control_in_prompt", "prompt_upsampling", "prompt_upsampler_max_tokens", "prompt_upsampler_temperature",
    "prompt_upsampler_top_p", "prompt_upsampler_top_k", "prompt_upsampler_repetition_penalty",
    "prompt_upsampler_presence_penalty", "prompt_upsampler_seed", "defaults_file",
})  # fmt: skip
STRINGS = {"name", "prompt", "negative_prompt", "model", "vision_path"}
INTS = {"seed", "fps", "num_frames", "max_frames", "num_steps", "num_video_frames_per_chunk", "num_conditional_frames"}
CHOICES = {"resolution": {"256", "480", "720", "768"}, "aspect_ratio": {"1,1", "4,3", "3,4", "16,9", "9,16"},
           "model_mode": {"video2video"}}  # fmt: skip


def problems(body: object) -> list[dict]:
    """FastAPI-shaped 422 details for a body the request model refuses."""
    if not isinstance(body, dict):
        return [{"type": "model_attributes_type", "loc": ["body"], "msg": "Input should be a valid dictionary"}]
    found = []

    def bad(loc: list, kind: str, msg: str) -> None:
        found.append({"type": kind, "loc": ["body", *loc], "msg": msg})

    for key, value in body.items():
        if key not in FIELDS:
            bad([key], "extra_forbidden", "Extra inputs are not permitted")
        elif value is None:
            continue
        elif key in STRINGS and not isinstance(value, str):
            bad([key], "string_type", "Input should be a valid string")
        elif key in INTS and (not isinstance(value, int) or isinstance(value, bool)):
            bad([key], "int_type", "Input should be a valid integer")
        elif key in CHOICES and value not in CHOICES[key]:
            bad([key], "literal_error", f"Input should be one of {sorted(CHOICES[key])}")
        elif key in HINTS:
            if not isinstance(value, dict):
                bad([key], "model_type", "Input should be a valid dictionary")
                continue
            for sub, item in value.items():
                if sub not in HINT_KEYS | HINT_EXTRA.get(key, set()):
                    bad([key, sub], "extra_forbidden", "Extra inputs are not permitted")
                elif sub == "control_path" and item is not None and not os.path.isfile(str(item)):
                    bad([key, sub], "path_not_file", "Path does not point to a file")
    if isinstance(body.get("vision_path"), str) and not os.path.isfile(body["vision_path"]):
        bad(["vision_path"], "path_not_file", "Path does not point to a file")
    return found


class App:
    def __init__(self, output_dir: Path, args: argparse.Namespace) -> None:
        self.output_dir = output_dir
        self.args = args
        self.lock = threading.Lock()  # one request at a time (max_batch_size 1, one replica)
        self.limit = float(os.environ.get("STANDIN_SERVE_LIMIT_SECONDS", "300"))
        self.delay = float(os.environ.get("STANDIN_SERVE_GENERATE_SECONDS", "0"))

    def generate(self, body: dict) -> tuple[int, dict]:
        folder = self.output_dir / f"generate_{datetime.datetime.now():%Y%m%d_%H%M%S}_{uuid.uuid4().hex[:4]}"
        args = {**body, "output_dir": str(folder)}
        if args.get("seed") is None:
            args["seed"] = random.randint(0, 10000)
        done: list[dict] = []

        def work() -> None:
            with self.lock:
                done.append(self._run(folder, args))

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        worker.join(self.limit)
        if worker.is_alive():
            return 500, {"detail": "TimeoutError"}  # the generation goes on and still writes its folder
        if "error" in done[0]:
            return 500, {"detail": done[0]["error"]}
        return 200, done[0]

    def _run(self, folder: Path, args: dict) -> dict:
        if not args.get("name"):
            return {"error": "ValidationError: 1 validation error for OmniSampleArgs\nname\n  Field required"}
        folder.mkdir(parents=True)
        (folder / "sample_args.json").write_text(json.dumps(args, indent=2))
        say(BANNER, f"Saved sample args to '{folder / 'sample_args.json'}'")
        time.sleep(self.delay)
        vision = args.get("vision_path")
        controls, weights, first = {}, {}, None
        for hint in HINTS:
            block = args.get(hint)
            if not isinstance(block, dict):
                continue
            weights[LAYER[hint]] = float(block.get("weight", 1.0))
            source = block.get("control_path") or vision
            if block.get("control_path"):
                controls[LAYER[hint]] = source
            first = first or source
            copy_file(source, folder / f"control_{hint}.mp4")
        if first is None:
            return {"error": "ValueError: transfer inference requires at least one control hint"}
        composite_video(
            folder / "vision.mp4",
            vision,
            controls,
            weights,
            args.get("prompt", ""),
            int(args["seed"]),
            min(int(args.get("num_steps") or 35), 3),
            BANNER,
            output_size(args, vision, first),
        )
        files = [folder / "vision.mp4", *[folder / f"control_{h}.mp4" for h in HINTS if isinstance(args.get(h), dict)]]
        outputs = {
            "args": args,
            "status": "success",
            "message": None,
            "stack_trace": None,
            "outputs": [{"content": {}, "files": [str(f) for f in files]}],
        }
        (folder / "sample_outputs.json").write_text(json.dumps(outputs, indent=2))
        say(BANNER, f"Saved transfer outputs to '{folder / 'sample_outputs.json'}'")
        outputs["outputs"] = [{"content": {}, "files": [str(f.relative_to(self.output_dir)) for f in files]}]
        return outputs


def handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, fmt: str, *args: object) -> None:
            say("ray.serve stand-in", f'"{self.command} {self.path}" {args[1] if len(args) > 1 else ""}')

        def reply(self, status: int, body: object, raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/models":
                self.reply(200, [""])
            elif self.path == "/info":
                self.reply(
                    200,
                    {
                        "environment": {"cosmos3_version": "stand-in", "commit_sha": None},
                        "models": [""],
                        "output_dir": str(app.output_dir),
                    },
                )
            elif self.path == "/-/healthz":
                self.reply(200, "success")
            elif self.path.startswith("/outputs/"):
                target = (app.output_dir / self.path.removeprefix("/outputs/")).resolve()
                if app.output_dir.resolve() in target.parents and target.is_file():
                    self.reply(200, None, target.read_bytes())
                else:
                    self.reply(404, {"detail": "Not Found"})
            else:
                self.reply(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            if self.path != "/generate":
                self.reply(404, {"detail": "Not Found"})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
            except ValueError:
                self.reply(422, {"detail": [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error"}]})
                return
            found = problems(body)
            if found:
                self.reply(422, {"detail": found})
            elif body.get("model"):
                self.reply(404, {"detail": f"Model '{body['model']}' not found. Available models: ['']"})
            else:
                self.reply(*app.generate(body))

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cosmos_framework.inference.ray.serve", allow_abbrev=False)
    parser.add_argument("--checkpoint-path", "--checkpoint_path", dest="checkpoint_path")
    parser.add_argument("-o", "--output-dir", "--output_dir", dest="output_dir")
    parser.add_argument("--parallelism-preset", choices=["throughput", "latency"], default="latency")
    parser.add_argument("--world-size", type=int)
    parser.add_argument("--max-batch-size", type=int, default=1)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.01)
    for flag, default in (
        ("guardrails", True),
        ("diffusion-cache", False),
        ("use-torch-compile", True),
        ("offload-guardrail-models", False),
    ):
        dest = flag.replace("-", "_")
        parser.add_argument(f"--{flag}", dest=dest, action="store_true", default=default)
        parser.add_argument(f"--no-{flag}", dest=dest, action="store_false")
    args = parser.parse_args(argv)
    if args.checkpoint_path is None:
        print("error: the following arguments are required: --checkpoint-path", file=sys.stderr)
        return 2
    if args.output_dir is None:
        raise ValueError("An output directory is required. Set it with -o <path> or --output-dir <path>.")
    output_dir = Path(args.output_dir).absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    say(
        BANNER,
        f"serving app: checkpoint {args.checkpoint_path}, world size {args.world_size}, diffusion cache "
        f"{'on' if args.diffusion_cache else 'off'}; loading the model",
    )
    simulate_load("serve", args.checkpoint_path)
    port = int(os.environ.get("RAY_SERVE_DEFAULT_HTTP_PORT", "8000"))
    server = ThreadingHTTPServer(
        (os.environ.get("RAY_SERVE_DEFAULT_HTTP_HOST", "127.0.0.1"), port), handler(App(output_dir, args))
    )
    print(f"INFO serve stand-in -- Application 'cosmos3_omni' is ready at http://127.0.0.1:{port}/.", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
