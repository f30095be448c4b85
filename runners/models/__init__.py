"""Model code: Step1, the tokenizers, the flow/HiFT decoder, the model folders, ASR, tiny writers.

Nothing here knows about requests, queues or HTTP; the serving core (runners/ above) drives it."""
