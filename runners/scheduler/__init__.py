"""Continuous batching: many requests share each LLM step (see scheduler.py for the policy)."""

from runners.scheduler.loop import EngineLoop, LLMRunner, StepRunner, StepTokens
from runners.scheduler.request import FinishReason, GenerationRequest, Job, RequestStatus
from runners.scheduler.scheduler import PrefillChunk, Scheduler, SchedulerOutput, SchedulerStats

__all__ = [
    "EngineLoop", "FinishReason", "GenerationRequest", "Job", "LLMRunner", "PrefillChunk", "RequestStatus",
    "Scheduler", "SchedulerOutput", "SchedulerStats", "StepRunner", "StepTokens",
]
