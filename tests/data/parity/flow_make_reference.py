"""Record flow_mel.npz by running the UPSTREAM flow on the seeded tiny flow.pt (run by hand, never by pytest).

Usage (upstream sources and their deps live outside the repo and our venv):
    git -C <mirror>/stepfun-ai+Step-Audio-EditX/repo archive HEAD stepvocoder | tar x -C /tmp/ref-upstream
    pip install --target /tmp/ref-flow einops hyperpyyaml
    python -c "from runners.models.tiny.decoder import write_decoder_part; write_decoder_part('/tmp/tinydec0', 0)"
    python tests/data/parity/flow_make_reference.py /tmp/tinydec0 tests/data/parity/flow_mel.npz
"""
import sys
sys.path[:0] = ["/tmp/ref-upstream", "/tmp/ref-flow"]
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml
import types
for _name in ("whisper", "scipy", "scipy.signal"):  # imported by upstream modules we do not exercise
    if _name not in sys.modules:
        try:
            __import__(_name)
        except ImportError:
            _m = types.ModuleType(_name); _m.get_window = None; sys.modules[_name] = _m

root = Path(sys.argv[1])          # tiny decoder dir written by runners.models.tiny.decoder.write_decoder_part(seed=0)
out = Path(sys.argv[2])
torch.manual_seed(1234)
with open(root / "cosyvoice.yaml") as f:
    configs = load_hyperpyyaml(f, overrides={"hift": None})   # flow only; hift is the vocoder helper's parity
flow = configs["flow"]
print(type(flow), configs["mel_conf"])
flow.load_state_dict(torch.load(root / "flow.pt", map_location="cpu"), strict=True)
flow.eval()

try:
    from stepvocoder.cosyvoice2.cli.cosyvoice import CosyVoice_stream_impl_
    reshape = CosyVoice_stream_impl_._reshape
except Exception as exc:  # the upstream module must import; we never re-implement it here
    raise SystemExit(f"cannot import upstream _reshape: {exc}")

g = torch.Generator().manual_seed(7)
def codec_ids(n):
    ids = []
    for i in range(n):
        if i % 5 < 2:
            ids.append(int(torch.randint(0, 1024, (1,), generator=g)))
        else:
            ids.append(1024 + int(torch.randint(0, 4096, (1,), generator=g)))
    return ids

token_ids = codec_ids(23)    # 4 whole groups + an incomplete one (3 tokens)
prompt_ids = codec_ids(16)   # 3 whole groups + 1 token
token = reshape(list(token_ids)).unsqueeze(0)
prompt_token = reshape(list(prompt_ids)).unsqueeze(0)
prompt_mel = torch.randn(1, 9, 80, generator=g)   # deliberately not 2x prompt frames
embedding = torch.randn(1, 192, generator=g) * 3
prompt_feat = F.interpolate(prompt_mel.transpose(1, 2), size=prompt_token.shape[1] * 2, mode="nearest").transpose(1, 2)
frames = 2 * (token.shape[1] + prompt_token.shape[1])
noise = torch.randn(1, 80, frames, generator=g)
buf = torch.zeros(1, 80, 50 * 600); buf[:, :, :frames] = noise
flow.decoder.rand_noise = buf

def mk(t):
    return torch.tensor([t.shape[1]], dtype=torch.long)

with torch.inference_mode():
    mel = flow.inference(token, mk(token), prompt_token, mk(prompt_token), prompt_feat, mk(prompt_feat), embedding, 10)
    h = flow.encoder_proj(flow.encoder(flow.input_embedding(torch.cat([prompt_token, token], 1)), mk(torch.cat([prompt_token, token], 1)))[0])
print(mel.shape, float(mel.abs().max()), float(mel.std()))

# reshape cases, including every trailing remainder
cases = {}
for n in range(5, 16):
    ids = codec_ids(n)
    cases[f"reshape_ids_{n}"] = np.array(ids, dtype=np.int64)
    cases[f"reshape_pairs_{n}"] = reshape(list(ids)).numpy()

np.savez_compressed(
    out,
    token_ids=np.array(token_ids, dtype=np.int64),
    prompt_ids=np.array(prompt_ids, dtype=np.int64),
    token_pairs=token.numpy(),
    prompt_pairs=prompt_token.numpy(),
    prompt_mel=prompt_mel.numpy().astype(np.float32),
    embedding=embedding.numpy().astype(np.float32),
    noise=noise.numpy().astype(np.float32),
    encoder_out=h.numpy().astype(np.float32),
    mel=mel.numpy().astype(np.float32),
    n_timesteps=np.array(10),
    tiny_seed=np.array(0),
    **cases,
)
print("wrote", out, out.stat().st_size)
