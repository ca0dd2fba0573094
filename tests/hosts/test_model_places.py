"""Where each model runs on an SSH host: Transfer1 (and the upscale) in REMOTE_DIR, the newer ones beside it."""

from __future__ import annotations

from pathlib import Path

from cosmos_assets.defs.resources import SshGpuHost
from cosmos_assets.settings import Settings


def host(tmp_path: Path, **fields: object) -> SshGpuHost:
    return SshGpuHost(
        host="gpu.example",
        user="ubuntu",
        ssh_config=str(tmp_path / "none"),
        remote_dir="~/cosmos-transfer1",
        docker_image="nvcr.io/me/cosmos-transfer1:latest",
        **fields,
    )


def test_each_model_has_its_checkout_and_image_and_they_share_the_checkpoint_folder(tmp_path: Path) -> None:
    gpu = host(tmp_path)
    assert gpu.model_place("cosmos-transfer1") == ("~/cosmos-transfer1", "nvcr.io/me/cosmos-transfer1:latest")
    assert gpu.model_place("preview") == ("~/cosmos-transfer1", "nvcr.io/me/cosmos-transfer1:latest")
    assert gpu.model_place("cosmos-transfer2.5") == ("~/cosmos-transfer2.5", "cosmos-transfer2.5:latest")
    assert gpu.model_place("cosmos3") == ("~/cosmos-framework", "cosmos-framework:latest")
    settings = gpu.host_settings("cosmos3")
    assert (
        settings.remote_dir == "~/cosmos-framework" and settings.checkpoint_dir == "~/cosmos-transfer1/../checkpoints"
    )
    assert gpu.host_settings().checkpoint_dir is None  # Transfer1's own default (REMOTE_DIR/../checkpoints)


def test_the_settings_name_the_newer_models_places(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "COSMOS_HOST": "ssh",
            "REMOTE_HOST": "gpu.example",
            "REMOTE_DIR_COSMOS3": "/data/c3",
            "DOCKER_IMAGE_TRANSFER2_5": "me/t25:1",
            "COSMOS_MODEL": "transfer2.5",
        }
    )
    gpu = SshGpuHost.from_settings(settings)
    assert gpu.model == "cosmos-transfer2.5"
    assert gpu.model_place("cosmos3") == ("/data/c3", "cosmos-framework:latest")
    assert gpu.model_place("cosmos-transfer2.5") == ("~/cosmos-transfer2.5", "me/t25:1")
