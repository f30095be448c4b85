"""A prompt cache folder that cannot be created or written: memory-only, the reason in /status, never a 500.

Tests run as root, which ignores permissions, so the folder is made unusable for real: the cache runs
as ``nobody`` (setpriv) in one test, and the whole service runs in a private mount namespace
(``unshare -m``) on a tmpfs that is remounted read-only while it serves in the other.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service_helpers import service_env

ROOT = Path(__file__).resolve().parents[2]

CACHE_AS_NOBODY = r"""
import json, os, sys, torch
from runners.prompt_cache import PromptCache, PromptFeatures
out = {}
# 1. a folder that cannot be created (its parent belongs to root)
c = PromptCache(sys.argv[1] + "/cannot/create")
c.put("k1", PromptFeatures(codec_ids=[1, 2, 3], mel=torch.zeros(1, 4, 80), speaker=torch.zeros(1, 192)))
out["create"] = {"error": c.stats().disk_error, "hit": c.get("k1") is not None}
# 2. a folder that turns read-only after start
mine = sys.argv[2]
c = PromptCache(mine)
c.put("k2", PromptFeatures(transcript="first"))
os.chmod(mine, 0o555)
for sub in os.listdir(mine):
    os.chmod(os.path.join(mine, sub), 0o555)
c.put("k3", PromptFeatures(transcript="second"))  # new prefix folder: cannot be made
c.put("k2", PromptFeatures(transcript="again"))   # existing folder: cannot be written
out["readonly"] = {"error": c.stats().disk_error, "hit": c.get("k3", need_features=False, need_transcript=True) is not None}
out["clear"] = c.clear()
print(json.dumps(out))
"""


@pytest.fixture()
def shared_dir() -> Iterator[Path]:
    """A root-owned folder that ``nobody`` can enter (pytest's own tmp folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="editx-faults-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_cache_folder_unusable_for_a_normal_user(shared_dir: Path) -> None:
    if shutil.which("setpriv") is None or os.getuid() != 0:
        pytest.skip("needs root and setpriv to run the cache as nobody")
    owned = shared_dir / "nobody-cache"
    owned.mkdir()
    os.chown(owned, 65534, 65534)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(owned)}
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                           CACHE_AS_NOBODY, str(shared_dir), str(owned)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=str(ROOT))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Permission denied" in out["create"]["error"] and "memory only" in out["create"]["error"]
    assert out["create"]["hit"] is True  # served from memory
    assert "Permission denied" in out["readonly"]["error"]
    assert out["readonly"]["hit"] is True
    assert out["clear"] >= 1
    # One warning for the whole degradation, not one per request.
    assert done.stderr.count("memory-only from now on") <= 2, done.stderr


SERVICE_ON_READONLY_MOUNT = r"""
import json, os, subprocess, sys, time
sys.path.insert(0, os.getcwd())
from tests.service_helpers import in_process_service, tone, wav_bytes
cache = os.environ["EDITX_CACHE_DIR"]
out = {}
with in_process_service({}) as (c, svc):
    deadline = time.monotonic() + 300
    while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    def edit(amp):
        return c.post("/edit", files={"audio": ("a.wav", wav_bytes(tone(1.0, amplitude=amp)))},
                      data={"edit_type": "denoise", "seed": "1"}).status_code
    out["before"] = edit(0.2)
    out["disk_before"] = c.get("/status").json()["cache"]["disk_entries"]
    subprocess.run(["mount", "-o", "remount,ro", cache], check=True)
    out["after"] = [edit(0.21), edit(0.22)]
    out["cache"] = c.get("/status").json()["cache"]
    clear = c.post("/cache/clear")
    out["clear"] = clear.status_code
    out["livez"] = c.get("/livez").status_code
print("RESULT " + json.dumps(out))
"""


def test_service_survives_its_cache_folder_turning_read_only(tiny_root: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "cache-mount"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs none {mnt} && umount {mnt}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.strip()}")
    env = {**os.environ, **service_env(tiny_root), "EDITX_CACHE_DIR": str(mnt), "PYTHONPATH": str(ROOT)}
    script = tmp_path / "serve_ro.py"
    script.write_text(textwrap.dedent(SERVICE_ON_READONLY_MOUNT))
    done = subprocess.run(["unshare", "-m", "sh", "-c",
                           f"mount -t tmpfs -o size=64m none {mnt} && exec {sys.executable} {script}"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT))
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    assert out["before"] == 200 and out["disk_before"] >= 1
    assert out["after"] == [200, 200]  # new prompts are served from memory
    assert "Read-only file system" in out["cache"]["disk_error"], out["cache"]
    assert out["clear"] == 200 and out["livez"] == 200
