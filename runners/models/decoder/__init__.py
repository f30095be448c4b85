"""Token-to-wave: the flow-matching decoder, the HiFT vocoder, their config, prompt features, batching."""
