"""The audio tokenizer (vq02 + vq06), Whisper's mel front end, the text tokenizer and the codec id spaces."""
