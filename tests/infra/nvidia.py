"""Test doubles of the NVIDIA driver side. Only for tests; never part of the product.

- `nvidia-container-runtime-hook`: dockerd registers its GPU device driver when it finds
  an executable by that name on its PATH at start, so `--gpus all` / `device_requests`
  are accepted (the container runs without GPUs).
- `nvidia-smi`: answers `nvidia-smi -L` (and a small `--query-gpu` csv) with N fake GPUs, and the run's
  utilisation query (`--query-gpu=utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits`) with
  random, plausible numbers per call.
  N is read at each call from `nvidia-smi.gpus` beside the script: tests change it with
  `set_fake_gpu_count`.
"""

from __future__ import annotations

from pathlib import Path

FAKE_GPU_NAME = "NVIDIA H100 80GB HBM3 (fake)"

_HOOK = "#!/bin/sh\n# test double: lets dockerd register the nvidia GPU driver\nexit 0\n"

_NVIDIA_SMI = r"""#!/bin/sh
# test double of nvidia-smi: N fake GPUs, N read from nvidia-smi.gpus beside this script
here=$(dirname "$0")
n=$(cat "$here/nvidia-smi.gpus" 2>/dev/null || echo 0)
name="__NAME__"
if [ "$n" -eq 0 ]; then
  echo "No devices were found"; exit 6
fi
case "$*" in
  *-L*)
    i=0; while [ "$i" -lt "$n" ]; do
      printf 'GPU %d: %s (UUID: GPU-00000000-0000-0000-0000-%012d)\n' "$i" "$name" "$i"; i=$((i+1)); done ;;
  *utilization.gpu,memory.used,memory.total*)
    # the run's sampler: plausible numbers that vary from call to call (utilisation %, MiB used, MiB total)
    i=0; while [ "$i" -lt "$n" ]; do
      r=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
      printf '%d, %d, 81559\n' $((r % 101)) $((1024 + (r / 101) % 79000)); i=$((i+1)); done ;;
  *--query-gpu*)
    i=0; while [ "$i" -lt "$n" ]; do
      printf '%d, %s, 81559 MiB, 81000 MiB\n' "$i" "$name"; i=$((i+1)); done ;;
  *)
    echo "fake nvidia-smi: $n GPU(s) of $name" ;;
esac
"""


def write_runtime_hook(bin_dir: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    hook = bin_dir / "nvidia-container-runtime-hook"
    hook.write_text(_HOOK)
    hook.chmod(0o755)
    return hook


def write_fake_nvidia_smi(bin_dir: Path, gpus: int = 2, name: str = FAKE_GPU_NAME) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(_NVIDIA_SMI.replace("__NAME__", name))
    smi.chmod(0o755)
    set_fake_gpu_count(bin_dir, gpus)
    return smi


def set_fake_gpu_count(bin_dir: Path, gpus: int) -> None:
    (bin_dir / "nvidia-smi.gpus").write_text(f"{gpus}\n")
