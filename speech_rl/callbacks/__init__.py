"""Lightning callbacks: per-phase timing, the device hand-off between phases, checkpoints at the
end and on preemption, the collapse guard, the weight-sync check."""
from speech_rl.callbacks.collapse import CollapseGuard, CollapseRules
from speech_rl.callbacks.final_checkpoint import FinalCheckpoint
from speech_rl.callbacks.handoff import DeviceHandoff
from speech_rl.callbacks.phases import PhaseAware, PhaseTimer, run_phase
from speech_rl.callbacks.preemption import Preemption
from speech_rl.callbacks.progress import StepProgressBar
from speech_rl.callbacks.sync_check import WeightSyncCheck

__all__ = ["PhaseAware", "PhaseTimer", "DeviceHandoff", "run_phase", "WeightSyncCheck", "CollapseGuard", "CollapseRules",
           "FinalCheckpoint", "Preemption", "StepProgressBar"]
