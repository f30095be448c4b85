"""Record reference numbers for tests/runners/models/test_step1.py::test_matches_reference_remote_code.

Run OUTSIDE the project environment's transformers, with the reference
(upstream's remote-code ``modeling_step1.py``, model classes only) importable
as ``modeling_step1`` from REF_CODE_DIR and transformers 4.53.3 first on the path:

    pip install --target /tmp/ref-step1 transformers==4.53.3 einops "tokenizers<0.22" "huggingface-hub<1"
    PYTHONPATH=/tmp/ref-step1:/tmp/ref_step1_code:. .venv/bin/python tests/data/parity/step1_record_reference.py

It builds the seed-0 tiny checkpoint (runners.models.tiny, step1 part only), runs the
reference in fp32 on the CPU, and writes step1_logits.npz beside this file.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
PROMPT_TEXT = "system\nMake the following audio more happy. The text corresponding to the audio is: hello there\n"
AUDIO_CODES = [5, 17, 1030, 2049, 5000, 900, 3, 1500, 4000, 4095, 12, 12, 1024, 1024, 1025]
GREEDY_STEPS = 12
SAMPLED_STEPS = 12
SAMPLE_SEED = 1234


def main() -> None:
    import transformers
    from transformers import LogitsProcessor, LogitsProcessorList

    import modeling_step1 as ref  # the reference, from REF_CODE_DIR

    from runners.models.tokenizers.text_tokenizer import TextTokenizer
    from runners.models.tiny import build_tiny_model_root

    class ReferenceRepetitionRule(LogitsProcessor):
        """Upstream's rule, restated: last id in >10 % of the last 10 ids → -inf."""

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            window = input_ids[:, -10:]
            if window.shape[1] < 10:
                return scores
            last = window[:, -1:]
            hit = (window == last).sum(dim=1).float() / 10 > 0.1
            scores[hit, last[hit].squeeze(-1)] = float("-inf")
            return scores

    assert transformers.__version__.startswith("4."), transformers.__version__
    with tempfile.TemporaryDirectory() as tmp:
        root = build_tiny_model_root(tmp, seed=0, parts={"step1"})
        llm_dir = root / "Step-Audio-EditX"
        tok = TextTokenizer(llm_dir)
        audio = "".join(f"<audio_{c}>" for c in AUDIO_CODES)
        prompt = [1, 4, *tok.encode(PROMPT_TEXT + audio + "\n"), 3, 4, *tok.encode("assistant\n")]
        config = ref.Step1Config.from_pretrained(str(llm_dir))
        model = ref.Step1ForCausalLM.from_pretrained(str(llm_dir), config=config, torch_dtype=torch.float32).eval()
        tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        model_bf16 = ref.Step1ForCausalLM.from_pretrained(str(llm_dir), config=config, torch_dtype=torch.bfloat16).eval()
        ids = torch.tensor([prompt])
        with torch.no_grad():
            logits = model(ids, use_cache=False).logits[0].float()
            logits_bf16 = model_bf16(ids, use_cache=False).logits[0].float()
            greedy = model.generate(ids, do_sample=False, max_new_tokens=GREEDY_STEPS, eos_token_id=3, pad_token_id=0)
            torch.manual_seed(SAMPLE_SEED)
            sampled = model.generate(
                ids,
                do_sample=True,
                temperature=0.7,
                max_new_tokens=SAMPLED_STEPS,
                logits_processor=LogitsProcessorList([ReferenceRepetitionRule()]),
                eos_token_id=3,
                pad_token_id=0,
            )
    vocab_probe = np.unique(
        np.concatenate([np.arange(0, 64), np.arange(324, 452), np.arange(65536, 65536 + 48), np.arange(74752 - 16, 74752)])
    )
    np.savez_compressed(
        HERE / "step1_logits.npz",
        prompt=np.array(prompt, dtype=np.int64),
        vocab_probe=vocab_probe.astype(np.int64),
        logits_probe=logits[:, vocab_probe].numpy().astype(np.float32),
        top5_last=torch.topk(logits[-1], 5).indices.numpy().astype(np.int64),
        top5_last_values=torch.topk(logits[-1], 5).values.numpy().astype(np.float32),
        argmax=logits.argmax(-1).numpy().astype(np.int64),
        logits_probe_bf16=logits_bf16[:, vocab_probe].numpy().astype(np.float32),
        argmax_bf16=logits_bf16.argmax(-1).numpy().astype(np.int64),
        greedy=greedy[0, len(prompt) :].numpy().astype(np.int64),
        sampled=sampled[0, len(prompt) :].numpy().astype(np.int64),
        sample_seed=np.array(SAMPLE_SEED),
        lm_head_tied=np.array(tied),
        transformers_version=np.array(transformers.__version__),
        torch_version=np.array(torch.__version__),
    )
    print(f"prompt {len(prompt)} tokens; greedy {greedy[0, len(prompt):].tolist()}; tied={tied}", file=sys.stderr)


if __name__ == "__main__":
    main()
