"""``NAME=N,NAME=N`` option values (``data select --sizes``, ``data synth --splits``)."""
from __future__ import annotations

from collections.abc import Iterable


def parse_counts(text: str, allowed: Iterable[str], *, option: str, example: str, names: str = "names",
                 minimum: int = 0) -> dict[str, int]:
    """``"D0=200, D2=150"`` -> ``{"D0": 200, "D2": 150}`` in the order given.

    ValueError naming ``option`` and the text when a part is not ``NAME=integer``, a name is not
    in ``allowed`` (called ``names`` in the message), a count is below ``minimum`` or nothing is given.

    >>> parse_counts("D0=200, D2=150", ["D0", "D1", "D2"], option="--sizes", example="D0=200")
    {'D0': 200, 'D2': 150}
    """
    allowed = list(allowed)
    try:
        counts = {k.strip(): int(v) for k, v in (x.split("=") for x in text.split(",") if x.strip())}
    except ValueError as exc:
        raise ValueError(f"{option} must look like {example}; got {text!r}") from exc
    unknown = sorted(set(counts) - set(allowed))
    if unknown or not counts or any(n < minimum for n in counts.values()):
        bad = f"unknown {', '.join(unknown)}; " if unknown else ""
        raise ValueError(f"{option} {text!r}: {bad}{names} are {', '.join(allowed)}, each with a count >= {minimum}")
    return counts
