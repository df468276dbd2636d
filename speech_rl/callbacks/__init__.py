"""Lightning callbacks: per-phase timing and the device hand-off between phases."""
from speech_rl.callbacks.collapse import CollapseGuard, CollapseRules
from speech_rl.callbacks.final_checkpoint import FinalCheckpoint
from speech_rl.callbacks.handoff import DeviceHandoff
from speech_rl.callbacks.phases import PhaseAware, PhaseTimer, run_phase
from speech_rl.callbacks.sync_check import WeightSyncCheck

__all__ = ["PhaseAware", "PhaseTimer", "DeviceHandoff", "run_phase", "WeightSyncCheck", "CollapseGuard", "CollapseRules",
           "FinalCheckpoint"]
