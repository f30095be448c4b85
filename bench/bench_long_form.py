"""Long-form work: a dialogue and a long edit as one batch, against the same work one piece at a time.

Prints figures, asserts nothing. One run, on one engine, side by side:

- a 12-turn, 3-voice dialogue rendered as one ``DialogueJob`` (all turns queued together, decoded
  ahead in parallel) against the same 12 turns cloned one after another: wall seconds and the ratio;
- the same dialogue streamed: seconds to its first audio, as a share of the whole stream's time;
- the same dialogue with an edit pass on every turn (``(happy)`` on each line): one batch against
  turn after turn (each turn's pass runs once its clone is decoded, beside the other turns' passes);
- a 3-minute recording edited as one ``EditJob`` (cut at its pauses, pieces edited as one batch)
  against the same pieces edited one after another: wall seconds and the ratio, both with the
  transcript and the pieces' prompt features already cached (the cut and the first run are
  printed on their own);
- the decoder's part of that edit alone: each piece's flow and vocoder over as many codec ids as
  the edit made per piece, all at once (the decoder worker batches them) against one after another.
  Its ratio bounds what batching can give the whole edit on this machine: a piece's flow runs over
  its ~25 s prompt plus its output, and where that is compute-bound, a batch costs what its rows do.

    .venv/bin/python -m bench.bench_long_form                 # tiny random model, CPU
    .venv/bin/python -m bench.bench_long_form --model /models --device cuda

The recording is espeak-ng speech when espeak-ng is installed (Whisper then finds its pauses), else
tone bursts separated by silences (cut at the quiet moments, edited with ``denoise``).
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from bench.common import at_once
from runners.audio import Audio, resample
from runners.config import EngineConfig
from runners.engine import EditXEngine
from runners.jobs import DialogueJob, EditJob, EditPass, Turn, no_progress
from runners.pipeline.plan import cut_recording, plan_job

LINES = [
    "Did you see the game last night?",
    "I did, and I still cannot believe that ending.",
    "Nobody expected the goalkeeper to score.",
    "Least of all the goalkeeper himself.",
]


def tone(hz: float, seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * math.pi * hz * t + 2 * np.sin(2 * math.pi * 5 * t))
            * (0.6 + 0.4 * np.sin(2 * math.pi * 3 * t))).astype(np.float32)


def recording(seconds: float, folder: Path, rate: int = 16000) -> tuple[Audio, str, str | None]:
    """(audio, edit type, edit value): espeak-ng speech with pauses, or tone bursts with pauses."""
    pause = np.zeros(int(0.8 * rate), np.float32)
    if shutil.which("espeak-ng"):
        lines = []
        for i, line in enumerate(LINES):
            raw = folder / f"line{i}.wav"
            subprocess.run(["espeak-ng", "-w", str(raw), line], check=True, capture_output=True)
            data, native = sf.read(raw, dtype="float32")
            lines.append(resample(torch.from_numpy(data), int(native), rate).numpy())
        kind: tuple[str, str | None] = ("emotion", "happy")
    else:
        lines = [tone(140 + 30 * i, 2.5 + 0.5 * i, rate) for i in range(4)]
        kind = ("denoise", None)
    parts: list[np.ndarray] = []
    while sum(p.size for p in parts) < seconds * rate:
        for line in lines:
            parts += [line, pause]
    samples = np.concatenate(parts)[:int(seconds * rate)]
    return Audio(torch.from_numpy(samples), rate), kind[0], kind[1]


def timed(call):  # noqa: ANN001, ANN201 - any call, its result
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model root (default: a fresh tiny random model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--edit-seconds", type=float, default=180.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model
        if model is None:
            from runners.models.tiny import build_tiny_model_root

            model = str(build_tiny_model_root(folder / "tiny"))
        cfg = EngineConfig(model_path=model, device=args.device, cache_dir="", voices_dir=str(folder / "voices"))
        engine = EditXEngine(cfg)
        load_s, _ = timed(engine.load)
        print(f"model: {model}  device: {engine.device}  load: {load_s:.2f} s  "
              f"max_batch: {cfg.max_batch}  decoder_batch: {cfg.decoder_batch}  torch threads: {torch.get_num_threads()}")
        voices = ["ann", "bob", "cy"]
        for name, hz in zip(voices, (150, 210, 270)):
            engine.create_voice(name, Audio(torch.from_numpy(tone(hz, 3.0)), 16000), f"this is the voice of {name}")
        turns = tuple(Turn(LINES[i % len(LINES)], voices[i % 3]) for i in range(args.turns))
        job = DialogueJob(turns, seed=1)
        engine.run(DialogueJob(turns[:2], seed=0)).collect()  # warm-up: one-off costs out of the figures

        # 1. the dialogue as one batch, against its turns one after another
        batch_s, syn = timed(lambda: engine.run(job).collect())
        def turn_after_turn(script: tuple[Turn, ...]) -> float:
            """Each turn as a dialogue of its own, seeded as in the whole one; seconds of audio made."""
            audio = 0.0
            for i, turn in enumerate(script):
                audio += engine.run(DialogueJob((turn,), seed=1 + 1000 * i)).collect().duration_s
            return audio
        serial_s, serial_audio = timed(lambda: turn_after_turn(turns))
        print(f"\ndialogue: {len(turns)} turns, {len(voices)} voices, {syn.duration_s:.1f} s of audio")
        print(f"  one batch        {batch_s:8.2f} s")
        print(f"  turn after turn  {serial_s:8.2f} s   ({serial_audio:.1f} s of audio)")
        print(f"  batch speed-up   {serial_s / batch_s:8.2f}x")

        # 2. the dialogue streamed: first audio as a share of the whole
        start = time.perf_counter()
        stream = engine.run(job, stream=True)
        first = None
        for chunk in stream:
            if first is None and chunk.samples.size:
                first = time.perf_counter() - start
        whole = time.perf_counter() - start
        print(f"  streamed: first audio after {first or 0:.2f} s of {whole:.2f} s "
              f"({100 * (first or 0) / whole:.0f}% of the whole)")

        # 3. the same turns with an edit pass each
        happy = tuple(Turn(t.text, t.voice, (EditPass("emotion", "happy"),)) for t in turns)
        edited_s, edited_syn = timed(lambda: engine.run(DialogueJob(happy, seed=1)).collect())
        edited_serial_s, _ = timed(lambda: turn_after_turn(happy))
        print(f"  with (happy) on every turn: {edited_syn.duration_s:.1f} s of audio")
        print(f"    one batch        {edited_s:8.2f} s")
        print(f"    turn after turn  {edited_serial_s:8.2f} s")
        print(f"    batch speed-up   {edited_serial_s / edited_s:8.2f}x")

        # 4. a long edit as one batch, against its pieces one after another
        audio, edit_type, edit_info = recording(args.edit_seconds, folder)
        edit = EditJob(audio, edit_type, edit_info, seed=3)
        plan = plan_job(engine.prep, engine.config, edit)
        cut_s, _ = timed(lambda: cut_recording(engine.prep, plan, no_progress))  # Whisper; cached from here on
        # Once untimed: the pieces' prompt features (the audio tokenizer, one piece at a time either way) are
        # cached for both runs below, so they compare the generation and decoding of the pieces only.
        features_s, _ = timed(lambda: engine.run(edit).collect())
        long_s, edited = timed(lambda: engine.run(edit).collect())
        def pieces_one_by_one() -> int:
            for part in plan.parts:
                if not part.unchanged:
                    assert part.source is not None
                    engine.run(EditJob(part.source, edit_type, edit_info, part.source_text, seed=3)).collect()
            return len(plan.parts)
        pieces_s, count = timed(pieces_one_by_one)
        print(f"\nlong edit: {audio.duration_s:.0f} s recording, {edit_type}{':' + edit_info if edit_info else ''}, "
              f"{count} pieces, {edited.duration_s:.1f} s out")
        print(f"  finding the pauses {cut_s:8.2f} s   (Whisper with word timestamps, once; not in the figures below)")
        print(f"  first run          {features_s:8.2f} s   (prompt features of every piece computed; cached below)")
        print(f"  one batch          {long_s:8.2f} s")
        print(f"  piece after piece  {pieces_s:8.2f} s")
        print(f"  batch speed-up     {pieces_s / long_s:8.2f}x")

        # 5. the decoder's share of that edit: the same pieces' decodes, together and one after another
        changed = [part.source for part in plan.parts if not part.unchanged and part.source is not None]
        per_piece = max(1, edited.generated_tokens // max(1, len(changed)))
        work = [(engine.prepare(src), engine.tokenize(src)[:per_piece]) for src in changed]
        def decode(i: int) -> None:
            engine.decode(work[i][1], work[i][0], seed=3)
        decode(0)  # warm-up
        together_s, _ = at_once([lambda i=i: decode(i) for i in range(len(work))])
        alone_s, _ = timed(lambda: [decode(i) for i in range(len(work))])
        print(f"  the decoder alone ({len(work)} pieces of {per_piece} codec ids, each over its own prompt):")
        print(f"    together           {together_s:8.2f} s")
        print(f"    one after another  {alone_s:8.2f} s   ({100 * alone_s / pieces_s:.0f}% of piece after piece)")
        print(f"    decoder speed-up   {alone_s / together_s:8.2f}x")
        print(f"  upper bound        {pieces_s / together_s:8.2f}x   (piece after piece / decoder together: the batch "
              "if the LLM and all else cost nothing)")
        engine.close()


if __name__ == "__main__":
    main()
