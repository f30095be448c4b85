"""editx-serve inference engine for the official Step-Audio-EditX checkpoint.

The public entry point is :class:`runners.engine.EditXEngine`; everything else
here is one part of the pipeline (audio front end, audio tokenizer, Step1 LLM,
token-to-wave decoder) that the engine owns.
"""
