#!/bin/sh
# Runs once while the image is built (BentoML's Dockerfile, as root, before its uv steps; service.py
# embeds this file in the Dockerfile).
#
# Installs uv 0.13.4 (the version BentoML's Dockerfile wants; it then skips its own install) in
# /usr/local/bin, and a small `uv` in /usr/local/sbin, which comes first on PATH. That one passes
# every call on to the real uv unchanged except `uv pip install`, which
# it runs without bytecode compilation and follows, in the same RUN and so the same layer, by
# removing files nothing loads:
#   - CUDA libraries no other library needs and torch never opens (checked with readelf and
#     strings on torch 2.11 +cu130): the alternative NVRTC build, multi-GPU cuSOLVER, the CUPTI
#     profiling helpers, NVBLAS, the FFTW wrapper, static archives; C/C++ headers; torch's ptxas
#     and protoc; bitsandbytes' builds for other CUDA/ROCm/XPU versions; the test suites inside wheels;
#   - no .pyc files are written: Python compiles what it imports on first start instead (seconds;
#     PYTHONPYCACHEPREFIX in bentofile.yaml keeps them in /tmp for restarts of the container).
# Together about 0.6 GB. It then fails the build when a library torch or the CUDA wheels link
# against is missing.
set -eu
# triton: nothing here compiles GPU kernels (UV_OVERRIDE in bentofile.yaml points uv at this file).
printf 'triton ; sys_platform == "never"\n' >/etc/editx-uv-overrides.txt
pip install --no-cache-dir --root-user-action=ignore "uv==0.13.4"
cat >/usr/local/sbin/uv <<'EOF'
#!/bin/sh
real=/usr/local/bin/uv
case " $* " in
  *" pip install "*) ;;
  *) exec "$real" "$@" ;;
esac
env -u UV_COMPILE_BYTECODE "$real" "$@" || exit $?
# uv hard-links the installed files from its cache, which would otherwise stay in this layer and keep
# every file removed below.
"$real" cache clean >/dev/null 2>&1 || rm -rf "${UV_CACHE_DIR:-$HOME/.cache/uv}"
site=$(echo "${VIRTUAL_ENV:-/app/.venv}"/lib/python3*/site-packages)
lib="$site/nvidia/cu13/lib"
before=$(du -sm "$site" | cut -f1)
rm -f "$lib"/libnvrtc.alt.so.* "$lib"/libnvrtc-builtins.alt.so.* "$lib"/libcusolverMg.so.* \
      "$lib"/libnvperf_host.so "$lib"/libnvperf_target.so "$lib"/libpcsamplingutil.so \
      "$lib"/libcheckpoint.so "$lib"/libnvblas.so.* "$lib"/libcufftw.so.* "$lib"/*.a
rm -rf "$site"/nvidia/*/include "$site"/torch/include
# torch's copies of ptxas and protoc serve kernel compilation and code generation only.
rm -f "$site"/torch/bin/ptxas "$site"/torch/bin/protoc "$site"/torch/bin/protoc-*
# bitsandbytes' builds for other CUDA, ROCm and XPU versions: it loads the one for torch's CUDA 13.
rm -f "$site"/bitsandbytes/libbitsandbytes_cuda1[0-2]*.so "$site"/bitsandbytes/libbitsandbytes_rocm*.so \
      "$site"/bitsandbytes/libbitsandbytes_xpu*.so
# Test suites shipped inside wheels (pandas, numba, numpy, scipy, sympy, ...): no module outside
# them imports them.
find "$site" -depth -type d -name tests -exec rm -rf {} +
echo "removed $((before - $(du -sm "$site" | cut -f1))) MB that nothing loads"
# Every library torch and the CUDA wheels link against must still be there (the RDMA plugin of
# cuFile needs InfiniBand libraries a host may add; the driver's libcuda comes from the host).
missing=$(for f in "$site"/torch/lib/*.so* "$lib"/*.so* "$site"/nvidia/cudnn/lib/*.so* \
            "$site"/nvidia/nccl/lib/*.so* "$site"/nvidia/cusparselt/lib/*.so* "$site"/nvidia/nvshmem/lib/libnvshmem_host.so*; do
            case "$f" in *libcufile_rdma*) continue ;; esac
            ldd "$f" 2>/dev/null | grep 'not found' | grep -v 'libcuda\.so' | sed "s|^|$f: |"
          done)
if [ -n "$missing" ]; then
  echo "a shared library lacks a dependency:" >&2; echo "$missing" >&2; exit 1
fi
EOF
chmod 755 /usr/local/sbin/uv
