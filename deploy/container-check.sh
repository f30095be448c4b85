#!/usr/bin/env bash
# Build the Bento's container image with podman, start it, check it the way a user would, remove it.
#
# What it proves: the image builds from BentoML's own Dockerfile; it starts as a non-root user with
# the weights mounted read-only at /models and the prompt cache and voices on a volume at /data;
# /readyz, /livez, /ui/, a clone (24 kHz audio back) and a transcription answer; a clone in flight
# when the container is stopped (SIGTERM) still gets its answer; the image fits the size budget; the
# Kubernetes Deployment of deploy/kubernetes starts under `podman kube play`. Container, image and
# volume are removed on every exit (trap). Exit status 0 only when every check passed.
#
# Where the declared base image cannot be pulled (no registry), a stand-in of the same distribution
# is built locally under that exact name (mmdebstrap), so podman uses it instead of pulling and
# BentoML's Dockerfile needs no edit; the machine's CA certificates are baked into the stand-in (a
# sandbox that re-signs HTTPS needs them for pip/uv inside the build). The stand-in is kept and
# reused (CONTAINER_KEEP_BASE=0 removes it when this run created it).
#
# Settings (environment): VENV (.venv), CONTAINER_MAX_GB (6: fail above), CONTAINER_READY_TIMEOUT_S
# (600), CONTAINER_KEEP_BASE (1), CONTAINER_PULL_TIMEOUT_S (45), CONTAINER_KUBE_PLAY (1: also start
# the rendered deploy/kubernetes Deployment with `podman kube play` and reach its /readyz).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
BENTOML="$VENV/bin/bentoml"
MAX_GB=${CONTAINER_MAX_GB:-6}
READY_TIMEOUT_S=${CONTAINER_READY_TIMEOUT_S:-600}
KEEP_BASE=${CONTAINER_KEEP_BASE:-1}
PULL_TIMEOUT_S=${CONTAINER_PULL_TIMEOUT_S:-45}
STANDIN_LABEL=io.editx-serve.standin
STANDIN_RECIPE=2  # raise when build_standin changes: an older stand-in is rebuilt

say() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; FAILED=1; }
now() { date +%s; }

FAILED=0
RUN_ID="editx-check-$$"
IMAGE="localhost/editx-check:$$"
CONTAINER="$RUN_ID"
VOLUME="$RUN_ID-data"
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/editx-container.XXXXXX")
CREATED_BASE=""
STARTED=0
KUBE_PLAYED=0

cleanup() {
  local rc=$?
  set +e
  if [ "$STARTED" = 1 ] && [ "$FAILED" = 1 ]; then
    echo "--- container log (last 60 lines)"; podman logs --tail 60 "$CONTAINER" 2>&1
  fi
  [ "$KUBE_PLAYED" = 1 ] && podman kube down "$WORK/kube.yaml" >/dev/null 2>&1
  podman rm -f -t 5 "$CONTAINER" >/dev/null 2>&1
  podman volume rm -f "$VOLUME" >/dev/null 2>&1
  podman rmi -f "$IMAGE" >/dev/null 2>&1
  if [ -n "$CREATED_BASE" ] && [ "$KEEP_BASE" = 0 ]; then
    podman rmi -f "$CREATED_BASE" "localhost/editx-standin-rootfs:bookworm" >/dev/null 2>&1
  fi
  podman image prune -f >/dev/null 2>&1  # untagged layers the build left (the stand-in is tagged: kept)
  rm -rf "$WORK"
  if [ "$rc" = 0 ] && [ "$FAILED" = 1 ]; then rc=1; fi
  if [ "$rc" = 0 ]; then echo "container check: all passed"; else echo "container check: FAILED" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'echo "container check: stopped at line $LINENO: $BASH_COMMAND" >&2' ERR

# ---------------------------------------------------------------- tools
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v newuidmap >/dev/null || need+=(uidmap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing ${need[*]}: run as root or apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
[ -x "$BENTOML" ] || { echo "no $BENTOML: run ./dev setup first (or set VENV)" >&2; exit 1; }

# This sandbox may not raise limits to podman's defaults, and crun refuses hybrid cgroups.
export CONTAINERS_CONF="$WORK/containers.conf"
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF

# ---------------------------------------------------------------- Bento
say "bentoml build"
t0=$(now)
export BENTOML_HOME="$WORK/bentoml" BENTOML_DO_NOT_TRACK=true
tag=$("$BENTOML" build . --output tag | sed -n 's/^__tag__://p' | tail -1)
[ -n "$tag" ] || { echo "bentoml build printed no tag" >&2; exit 1; }
bento_dir="$BENTOML_HOME/bentos/${tag%%:*}/${tag#*:}"
base=$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$bento_dir/env/docker/Dockerfile" | head -1)
echo "bento $tag ($(( $(now) - t0 )) s), base image $base"

# ---------------------------------------------------------------- base image
build_standin() {
  # Same distribution as the declared base, built from Debian's archive (the URIs apt uses here).
  case "$base" in
    *bookworm*) suite=bookworm ;;
    *) echo "no stand-in recipe for base $base (only Debian bookworm)" >&2; return 1 ;;
  esac
  local sources=() uri
  local main_uri=http://deb.debian.org/debian sec_uri=http://deb.debian.org/debian-security
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {print $2}' /etc/apt/sources.list.d/debian.sources | grep -v security | head -1)
    [ -n "$uri" ] && main_uri=$uri
    uri=$(awk '/^URIs:/ {print $2}' /etc/apt/sources.list.d/debian.sources | grep security | head -1)
    [ -n "$uri" ] && sec_uri=$uri
  fi
  sources=("deb $main_uri $suite main" "deb $main_uri $suite-updates main" "deb $sec_uri $suite-security main")
  say "building a stand-in for $base (mmdebstrap minbase $suite from $main_uri)"
  local t=$(now)
  # As Debian's own slim images: no documentation, manual pages or translations (the dpkg settings
  # stay in the image, so later apt installs leave them out too), /usr merged by usr-is-merged, not
  # by usrmerge (which pulls in perl).
  mmdebstrap --quiet --variant=minbase \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/groff/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    "$suite" "$WORK/rootfs.tar" "${sources[@]}"
  podman import -q "$WORK/rootfs.tar" localhost/editx-standin-rootfs:bookworm >/dev/null
  rm -f "$WORK/rootfs.tar"
  mkdir -p "$WORK/standin/ca"
  cp /usr/local/share/ca-certificates/*.crt "$WORK/standin/ca/" 2>/dev/null || true
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$WORK/standin/host-ca.pem"
  else
    cat "$WORK"/standin/ca/*.crt >"$WORK/standin/host-ca.pem"
  fi
  # A bundle of its own path: the ca-certificates package rewrites /etc/ssl/certs during the build.
  cat >"$WORK/standin/Containerfile" <<'EOF'
FROM localhost/editx-standin-rootfs:bookworm
COPY ca/ /usr/local/share/ca-certificates/
COPY host-ca.pem /etc/ssl/editx-host-ca.pem
ENV SSL_CERT_FILE=/etc/ssl/editx-host-ca.pem PIP_CERT=/etc/ssl/editx-host-ca.pem \
    REQUESTS_CA_BUNDLE=/etc/ssl/editx-host-ca.pem UV_NATIVE_TLS=1
CMD ["bash"]
EOF
  podman build -q --layers=false --label "$STANDIN_LABEL=$STANDIN_RECIPE" -t "$base" "$WORK/standin" >/dev/null
  CREATED_BASE=$base
  echo "stand-in base built in $(( $(now) - t )) s"
}

standin=""
podman image exists "$base" && standin=$(podman image inspect --format "{{index .Labels \"$STANDIN_LABEL\"}}" "$base")
if [ -n "$standin" ] && [ "$standin" != "$STANDIN_RECIPE" ]; then
  echo "the local stand-in for $base is from an older recipe: rebuilding it"
  podman rmi -f "$base" localhost/editx-standin-rootfs:bookworm >/dev/null
  build_standin
elif [ -n "$standin" ]; then
  echo "reusing the local stand-in for $base (built from Debian's archive by an earlier run)"
elif podman image exists "$base"; then
  echo "using the local $base"
elif timeout "$PULL_TIMEOUT_S" podman pull -q "$base" >/dev/null 2>&1; then
  echo "pulled $base"
else
  build_standin
fi

# ---------------------------------------------------------------- image
say "bentoml containerize (podman)"
t0=$(now)
"$BENTOML" containerize "$tag" --backend podman --image-tag "$IMAGE" >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log"; echo "image build failed" >&2; exit 1; }
build_s=$(( $(now) - t0 ))
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
size_gb=$(awk -v s="$size" 'BEGIN {printf "%.2f", s / 1e9}')
echo "image built in $build_s s; size $size_gb GB ($size bytes)"
podman history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | awk -F'\t' '{printf "  %10s  %.90s\n", $1, $2}' | head -25
awk -v s="$size" -v m="$MAX_GB" 'BEGIN {exit !(s <= m * 1e9)}' || fail "image is $size_gb GB, over the ${MAX_GB} GB budget"
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ] || fail "image runs as '${user:-root}', not a non-root user"

# ---------------------------------------------------------------- start
say "start: tiny random model mounted read-only at /models, a volume at /data"
PYTHONPATH=$ROOT "$PY" -m runners.models.tiny "$WORK/models" >/dev/null
chmod -R a+rX "$WORK/models"
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
podman volume create "$VOLUME" >/dev/null
t0=$(now)
podman run -d --name "$CONTAINER" -p "127.0.0.1:$port:3000" \
  -v "$WORK/models:/models:ro" -v "$VOLUME:/data" \
  -e EDITX_MODEL_PATH=/models -e EDITX_AUDIO_ONLY_DECODING=1 -e EDITX_MAX_NEW_TOKENS=150 \
  -e HF_HUB_OFFLINE=1 "$IMAGE" >/dev/null
STARTED=1
URL="http://127.0.0.1:$port"
wait_ready() {  # url container-name; sets ready_s (seconds since t0)
  local ready=0
  while [ $(( $(now) - t0 )) -lt "$READY_TIMEOUT_S" ]; do
    if [ "$(podman inspect --format '{{.State.Running}}' "$2" 2>/dev/null)" != true ]; then
      fail "the container $2 is not running before /readyz answered"; break
    fi
    if curl -fsS -o /dev/null --max-time 5 "$1/readyz" 2>/dev/null; then ready=1; break; fi
    sleep 2
  done
  ready_s=$(( $(now) - t0 ))
  if [ "$ready" = 1 ]; then echo "/readyz 200 after $ready_s s"; else fail "/readyz not 200 within $ready_s s"; return 1; fi
}
wait_ready "$URL" "$CONTAINER" || exit 1

# ---------------------------------------------------------------- checks
say "checks on $URL"
check_status() {  # name expected-code curl-args...
  local name=$1 want=$2; shift 2
  local got
  got=$(curl -sS -o "$WORK/body" -w '%{http_code}' --max-time 300 "$@") || got=000
  if [ "$got" = "$want" ]; then echo "ok   $name -> $got"; else fail "$name -> $got (want $want): $(head -c 300 "$WORK/body")"; fi
}
check_status "GET /livez" 200 "$URL/livez"
check_status "GET /ui/" 200 "$URL/ui/"
grep -qi gradio "$WORK/body" || fail "/ui/ is not the Gradio page"
check_status "GET /metrics" 200 "$URL/metrics"

uid=$(podman exec "$CONTAINER" id -u)
[ "$uid" != 0 ] && echo "ok   runs as uid $uid ($user)" || fail "the service runs as root"
if podman exec "$CONTAINER" sh -c 'touch /models/.w' 2>/dev/null; then fail "/models is writable"; else echo "ok   /models is read-only"; fi
podman exec "$CONTAINER" sh -c 'touch /data/voices/.w && rm /data/voices/.w' \
  && echo "ok   /data/voices is writable by uid $uid" || fail "/data/voices is not writable"
env_in=$(podman exec "$CONTAINER" sh -c 'echo "$EDITX_CACHE_DIR $EDITX_VOICES_DIR $EDITX_MODEL_PATH"')
[ "$env_in" = "/data/cache /data/voices /models" ] && echo "ok   env: $env_in" || fail "env is '$env_in'"

"$PY" - "$WORK/voice.wav" <<'EOF'
import sys
import numpy as np
import soundfile as sf
t = np.arange(int(1.5 * 16000)) / 16000
wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
sf.write(sys.argv[1], wave.astype(np.float32), 16000)
EOF
t1=$(now)
check_status "POST /clone" 200 -F "prompt_audio=@$WORK/voice.wav" -F "prompt_text=a test prompt" \
  -F "target_text=Hello there." -F seed=0 "$URL/clone"
cp "$WORK/body" "$WORK/clone.out"
"$PY" - "$WORK/clone.out" <<'EOF' || fail "the clone answer is not 24 kHz audio"
import sys
import soundfile as sf
info = sf.info(sys.argv[1])
assert info.samplerate == 24000 and info.frames > 0, (info.samplerate, info.frames)
print(f"ok   clone: {info.frames / info.samplerate:.2f} s of {info.samplerate} Hz audio")
EOF
echo "     clone took $(( $(now) - t1 )) s"
check_status "POST /transcribe" 200 -F "audio=@$WORK/voice.wav" "$URL/transcribe"
"$PY" - "$WORK/body" <<'EOF' || fail "the transcription answer lacks its fields"
import json, sys
body = json.load(open(sys.argv[1]))
assert "text" in body and body["duration_s"] > 1.0, body
print(f"ok   transcribe: {body}")
EOF
mp=$(podman volume inspect --format '{{.Mountpoint}}' "$VOLUME")
n=$(find "$mp/cache" -type f 2>/dev/null | wc -l)
[ "$n" -gt 0 ] && echo "ok   prompt cache on the volume: $n file(s) under /data/cache" || fail "no prompt cache files on the volume"

first_ready_s=$ready_s

# ---------------------------------------------------------------- graceful stop
say "graceful stop: a clone in flight when the container gets SIGTERM still gets its answer"
"$PY" -c 'import sys, numpy as np, soundfile as sf
t = np.arange(32000) / 16000
sf.write(sys.argv[1], (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 16000)' "$WORK/voice2.wav"
curl -sS -o "$WORK/stop.out" -w '%{http_code}' --max-time 300 -F "prompt_audio=@$WORK/voice2.wav" \
  -F "prompt_text=a test prompt" -F "target_text=Hello there." -F seed=1 "$URL/clone" >"$WORK/stop.code" 2>&1 &
cpid=$!
sleep 0.5
in_flight=0; kill -0 "$cpid" 2>/dev/null && in_flight=1
t1=$(now)
podman stop -t 120 "$CONTAINER" >/dev/null  # SIGTERM; SIGKILL only after 120 s
stop_s=$(( $(now) - t1 ))
wait "$cpid" || true
code=$(cat "$WORK/stop.code")
if [ "$in_flight" = 0 ]; then
  echo "note: the clone finished before SIGTERM (a fast machine): graceful stop not exercised"
elif [ "$code" = 200 ] && "$PY" -c 'import sys, soundfile as sf; assert sf.info(sys.argv[1]).frames > 0' "$WORK/stop.out"; then
  echo "ok   the clone in flight at SIGTERM answered 200 with audio; the container stopped in $stop_s s"
else
  fail "the clone in flight at SIGTERM got '$code' (the container stopped in $stop_s s)"
fi

# ---------------------------------------------------------------- the Kubernetes Deployment, under podman
kube_note="skipped"
if [ "${CONTAINER_KUBE_PLAY:-1}" = 1 ] && command -v kubectl >/dev/null; then
  say "podman kube play: the rendered Deployment (image just built; GPU, Secret and claims replaced)"
  kport=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  kubectl kustomize deploy/kubernetes/base \
    | "$PY" deploy/kube_play.py --image "$IMAGE" --host-dir "$WORK" --port "$kport" >"$WORK/kube.yaml"
  KUBE_PLAYED=1
  t0=$(now)
  if podman kube play "$WORK/kube.yaml" >"$WORK/kube.log" 2>&1; then
    # podman names the Deployment's pod <name>-pod-0 and its container <pod>-<container>.
    kube_container=$(podman ps --format '{{.Names}}' | grep -E '^editx-pod(-0)?-editx$' | head -1 || true)
    [ -n "$kube_container" ] || { podman ps -a; cat "$WORK/kube.log"; }
    if [ -n "$kube_container" ] && wait_ready "http://127.0.0.1:$kport" "$kube_container"; then
      kube_uid=$(podman exec "$kube_container" id -u)
      [ "$kube_uid" = 1034 ] && echo "ok   the Deployment's pod runs as uid $kube_uid" || fail "the pod runs as uid $kube_uid"
      if podman exec "$kube_container" sh -c 'touch /models/.w' 2>/dev/null; then fail "the pod's /models is writable"
      else echo "ok   the pod's /models is read-only"; fi
      kube_note="/readyz 200 after $ready_s s"
    else
      podman logs --tail 40 "$kube_container" 2>&1; kube_note="FAILED"
    fi
  else
    cat "$WORK/kube.log"; fail "podman kube play failed"; kube_note="FAILED"
  fi
fi

say "summary"
echo "bento build + image build: $build_s s; image $IMAGE: $size_gb GB (budget ${MAX_GB} GB)"
echo "start to /readyz: $first_ready_s s (podman run); kube play of the Deployment: $kube_note"
