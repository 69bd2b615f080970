"""LiteLLM's proxy, the peer relay, in its own virtual environment under the cache, keyed by version.

Its pins (hundreds of packages) must never touch the project's environment, and creating it takes minutes, so it
is made once per version and reused by every later bench run.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

from llama_orch_devtools.bench.harness import say
from llama_orch_devtools.llamacpp_build import cache_root

# The newest release whose dependencies all resolve from the registry here (1.104.x-1.109.x, except 1.106.0,
# require a certifi release that is not published); the results record it.
LITELLM_VERSION = "1.106.0"


def env_dir(version: str = LITELLM_VERSION) -> Path:
    return cache_root() / "litellm" / version


def litellm_binary(version: str = LITELLM_VERSION) -> Path:
    return env_dir(version) / "bin" / "litellm"


def ensure_litellm(version: str = LITELLM_VERSION) -> Path:
    """The proxy's `litellm` executable, installing `litellm[proxy]==version` first when absent."""
    target = env_dir(version)
    marker = target / ".installed"
    if marker.is_file() and litellm_binary(version).is_file():
        return litellm_binary(version)
    say(f"creating LiteLLM {version} environment in {target} (first run only, a few minutes)")
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    cmd = [str(target / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    result = subprocess.run([*cmd, f"litellm[proxy]=={version}"], stdout=sys.stderr, check=False)
    if result.returncode != 0 or not litellm_binary(version).is_file():
        raise RuntimeError(f"installing litellm[proxy]=={version} failed (exit {result.returncode})")
    marker.write_text(version + "\n")
    say(f"LiteLLM {version} installed")
    return litellm_binary(version)
