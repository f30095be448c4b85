"""Tiny random-weight checkpoints in the exact official layout.

``python -m runners.tiny DIR`` writes a complete model root offline in seconds:
the real file names, key names and id layout, with small dimensions. Tests,
CI and anyone without the real weights run the whole engine on it; its output
is noise by construction.
"""
