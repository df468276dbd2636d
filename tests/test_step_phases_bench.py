"""benchmarks/step_phases.py's summary: the phases a run logged, ASR or TTS."""
import importlib.util
import math
from pathlib import Path

spec = importlib.util.spec_from_file_location("step_phases", Path(__file__).parents[1] / "benchmarks" / "step_phases.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def _run(phases: dict[str, float], n: int = 4, audio: float | None = None) -> dict[str, dict[int, float]]:
    s = {f"time/{p}": {i: v * (10 if i == 0 else 1) for i in range(n)} for p, v in phases.items()}
    s["time/step"] = {i: sum(phases.values()) * (10 if i == 0 else 1) for i in range(n)}
    if audio is not None:
        s["train/audio_seconds"] = {i: audio for i in range(n)}
    return s


def test_tts_run_has_a_flow_phase_and_no_real_time_factor():
    med, series, audio = bench.summarise(_run({"rollout": 0.3, "flow": 4.5, "reward": 1.1, "policy": 0.6,
                                               "sync": 0.002, "handoff": 0.001}))
    assert set(series) == {"rollout", "flow", "reward", "policy", "sync", "handoff", "step"}
    assert math.isclose(med["flow"], 4.5) and len(series["flow"]) == 3          # warm-up step left out
    text = bench.table(med, audio, None)
    assert "| flow | 4.5000 | 69.2% |" in text and "0.05% of the step" in text and "real-time" not in text


def test_asr_run_reports_real_time_factor_and_skip():
    med, series, audio = bench.summarise(_run({"encode": 0.1, "rollout": 0.4, "reward": 0.02, "policy": 0.4,
                                               "sync": 0.007, "handoff": 0.0}, audio=40.0), skip=2)
    assert "flow" not in med and len(series["step"]) == 2
    assert "40.0 s of audio per step" in bench.table(med, audio, 600.0)
