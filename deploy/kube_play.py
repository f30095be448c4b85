"""Turn the rendered Kubernetes Deployment into one ``podman kube play`` can start on a machine without a cluster.

Used by deploy/container-check.sh: it reads ``kubectl kustomize deploy/kubernetes/base`` on stdin
and writes the Deployment alone, changed only where a single machine differs from a cluster:
the image is the one just built, the GPU and the other resources are dropped (no GPU, no
scheduler), the volumes claimed from the cluster become host folders (the weights stay
read-only), the API-key Secret becomes a literal test key, and the port is published on
127.0.0.1. Everything else (command, user, env, probes, mounts) is the manifest's own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def for_podman(docs: list[dict], image: str, host_dir: Path, port: int) -> dict:
    (deployment,) = [d for d in docs if d and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container["image"] = image
    container.pop("resources", None)
    for spec in container.get("ports", []):
        spec.update(hostPort=port, hostIP="127.0.0.1")
    for env in container.get("env", []):
        if "valueFrom" in env and "secretKeyRef" in env["valueFrom"]:
            env.pop("valueFrom")
            env["value"] = "container-check-key"
    container["env"] = container.get("env", []) + [
        {"name": "EDITX_AUDIO_ONLY_DECODING", "value": "1"},  # a random model: sample audio ids only
    ]
    for volume in pod.get("volumes", []):
        name = volume["name"]
        if name == "models":
            volume.clear()
            volume.update(name=name, hostPath={"path": str(host_dir / "models"), "type": "Directory"})
        elif "persistentVolumeClaim" in volume or "emptyDir" in volume:
            folder = host_dir / "kube" / name
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o1777)  # the pod's user (uid 1034) writes here; fsGroup is not applied by podman
            volume.clear()
            volume.update(name=name, hostPath={"path": str(folder), "type": "Directory"})
    for key in ("tolerations", "topologySpreadConstraints", "nodeSelector"):
        pod.pop(key, None)
    deployment["spec"]["replicas"] = 1
    return deployment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--host-dir", type=Path, required=True, help="holds models/ (the tiny model root)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    docs = list(yaml.safe_load_all(sys.stdin))
    yaml.safe_dump(for_podman(docs, args.image, args.host_dir, args.port), sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
