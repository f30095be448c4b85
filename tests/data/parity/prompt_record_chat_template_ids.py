"""Record prompt_chat_template_ids.json: the 2026 release's own prompt code on the tiny chat-template tokenizer.

Upstream's prompt methods (``_encode_audio_edit_prompt``, ``_encode_audio_edit_clone_prompt``) and its
``config/prompts.py`` are taken from the upstream mirror at a652e87 into /tmp (never into this repository);
only those two methods are compiled out of ``tts.py`` (the rest of the file needs vLLM and CUDA) and run with
transformers 4.57.3 (the release's pin is ``transformers>=4.57.3``) on the tiny tokenizer files written by
``runners.tiny`` with ``chat_template=True``:

    pip install --target /tmp/ref-457 transformers==4.57.3 "tokenizers>=0.22,<0.23" "huggingface-hub<1.0"
    M=<mirror of stepfun-ai/Step-Audio-EditX with a652e87>; mkdir -p /tmp/up2026
    git -C $M show a652e87:tts.py > /tmp/up2026/tts.py
    git -C $M show a652e87:config/prompts.py > /tmp/up2026/upstream_prompts.py
    PYTHONPATH=/tmp/ref-457:. .venv/bin/python tests/data/parity/prompt_record_chat_template_ids.py
"""

from __future__ import annotations

import ast
import importlib.util
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
UPSTREAM = Path("/tmp/up2026")
METHODS = ("_encode_audio_edit_prompt", "_encode_audio_edit_clone_prompt")

# (name, prompt_text, prompt codec ids, target text) for clones; (name, instruction, codec ids) for edits.
CLONES = [
    ("clone_english", "Please call Stella and ask her to bring these things with her from the store.",
     [5, 17, 1024, 2000, 5119, 900, 3, 1500, 1501, 4000], "Good morning, how are you today?"),
    ("clone_japanese", "a test prompt", [1, 2, 1030, 1031, 1032], "[Japanese]今日はいい天気ですね。"),
    ("clone_polyphone", "a test prompt", [1, 2, 1030, 1031, 1032], "我也想guo4guo4guo1儿guo4guo4的生活"),
]
EDITS = [
    ("edit_emotion", "Make the following audio more happy. The text corresponding to the audio is: hello there.\n",
     [1, 2, 1030, 1031, 1032]),
    ("edit_paralinguistic",
     "Add some non-verbal sounds to make the audio more natural, the new text is : hello [clears throat] there.\n"
     "  The text corresponding to the audio is: hello there.\n", [7, 8, 2048, 2049, 2050, 9, 10, 3000, 3001, 3002]),
]


def upstream_methods() -> dict[str, Any]:
    tree = ast.parse((UPSTREAM / "tts.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "StepAudioTTS")
    funcs = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in METHODS]
    namespace: dict[str, Any] = {}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), "upstream-tts.py", "exec"), namespace)  # noqa: S102
    return {name: namespace[name] for name in METHODS}


def main() -> None:
    import transformers
    from transformers import AutoTokenizer

    from runners.tiny import build_tiny_model_root
    from runners.tokens import to_token_string

    assert transformers.__version__ == "4.57.3", transformers.__version__
    spec = importlib.util.spec_from_file_location("upstream_prompts", UPSTREAM / "upstream_prompts.py")
    assert spec and spec.loader
    prompts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prompts)
    methods = upstream_methods()
    out: dict[str, Any] = {"transformers": transformers.__version__, "upstream_commit": "a652e87", "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        llm = build_tiny_model_root(Path(tmp), seed=0, parts={"step1"}, chat_template=True) / "Step-Audio-EditX"
        tok = AutoTokenizer.from_pretrained(str(llm), local_files_only=True)
        this = SimpleNamespace(tokenizer=tok, edit_sys_prompt=prompts.AUDIO_EDIT_SYSTEM_PROMPT,
                               edit_clone_sys_prompt_tpl=prompts.AUDIO_EDIT_CLONE_SYSTEM_PROMPT_TPL)
        for name, prompt_text, codec, target in CLONES:
            ids = methods["_encode_audio_edit_clone_prompt"](this, target, prompt_text, "debug", to_token_string(codec))
            out["cases"][name] = {"kind": "clone", "prompt_text": prompt_text, "codec": codec, "text": target,
                                  "ids": list(ids)}
        for name, instruction, codec in EDITS:
            ids = methods["_encode_audio_edit_prompt"](this, this.edit_sys_prompt, instruction, to_token_string(codec))
            out["cases"][name] = {"kind": "edit", "instruction": instruction, "codec": codec, "ids": list(ids)}
        out["tokenizer_class"] = type(tok).__name__
    (HERE / "prompt_chat_template_ids.json").write_text(json.dumps(out, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
