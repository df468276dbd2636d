"""The shipped config files (``configs/<group>/<name>.yaml``) as plain dicts, for code that
builds a module without Hydra (tests, benchmarks, notebooks), so that the YAML stays the
one home of every default."""
from __future__ import annotations

import importlib.resources
from collections.abc import Mapping, Sequence
from typing import Any


def require_keys(cfg: Mapping[str, Any], keys: Sequence[str], what: str, hint: str) -> None:
    """ValueError "``what`` lacks K1, K2 (``hint``)" naming the ``keys`` that ``cfg`` lacks:
    the config files are the one home of these values, so code reads them without defaults."""
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)} ({hint})")


def load_config_group(group: str, name: str, **overrides: Any) -> dict[str, Any]:
    """``configs/<group>/<name>.yaml`` as a dict, with ``overrides`` applied. An override of
    a key the file does not have is refused (it would be a typo or a setting nothing reads).

    >>> load_config_group("rollout", "torch", max_new_tokens=8)["max_new_tokens"]
    8
    """
    from omegaconf import OmegaConf

    path = importlib.resources.files("configs") / group / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no config configs/{group}/{name}.yaml")
    base = OmegaConf.to_container(OmegaConf.create(path.read_text()))
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ValueError(f"{', '.join(unknown)} not in configs/{group}/{name}.yaml")
    return {**base, **overrides}
