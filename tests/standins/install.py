"""Lay the stand-ins into a test checkout at the real entry points' paths, with what they import beside them."""

from __future__ import annotations

import shutil
from pathlib import Path

from cosmos_assets.models import preview_model

HERE = Path(__file__).resolve().parent
CONTRACTS = Path(__file__).resolve().parents[2] / "cosmos_assets" / "contract"
# model -> (folder under tests/standins, folder of the entry point in the checkout, contract file prefix)
LAYOUTS = {
    "cosmos-transfer2.5": ("transfer2_5", "examples", "transfer2_5"),
    "cosmos3": ("cosmos3", "cosmos_framework/scripts", "cosmos3"),
}
DOCKERFILE = "FROM cosmos-test-base:latest\nRUN ln -sf /usr/bin/python3 /usr/local/bin/python\nWORKDIR /workspace\n"


def install_checkout(model: str, checkout: Path) -> Path:
    """A checkout of ``model`` made of its stand-in, its helpers and contracts, and a Dockerfile on the test base."""
    source, entry_dir, prefix = LAYOUTS[model]
    shutil.copytree(HERE / source, checkout, dirs_exist_ok=True)
    beside = checkout / entry_dir
    shutil.copy(HERE / "standin_common.py", beside / "standin_common.py")
    shutil.copy(preview_model.__file__, beside / "preview_model.py")
    shutil.copy(CONTRACTS / f"{prefix}_cli.json", beside / "cli.json")
    shutil.copy(CONTRACTS / f"{prefix}_spec_schema.json", beside / "spec_schema.json")
    (checkout / "Dockerfile").write_text(DOCKERFILE)
    return checkout
