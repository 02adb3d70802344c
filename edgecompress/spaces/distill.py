"""Distillation knobs: how the compressed student learns from its teacher while fine-tuning."""

from __future__ import annotations

from collections.abc import Sequence

from edgecompress.plan import Value
from edgecompress.spaces.base import Knob, KnobSpace, check_choices
from edgecompress.tasks import KD_MODES, FinetuneSettings

KD_WEIGHT_STEP = 0.1


def distillation_knobs(
    settings: FinetuneSettings,
    *,
    temperatures: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
    modes: Sequence[str] = ("soft", "hard"),
    hint_weights: Sequence[float] = (0.0, 0.1, 1.0),
    reads: Sequence[str] = ("temperature", "kd_weight", "kd_mode", "hint_weight"),
) -> KnobSpace:
    """Knobs for ``finetune.temperature``, ``finetune.kd_weight`` (0 to 1 by 0.1),
    ``finetune.kd_mode`` and ``finetune.hint_weight``, those of them the task's distillation
    ``reads`` (a regression task's reads no temperature and no mode: plans differing only there
    would train the same model); each one's identity is ``settings``'s value (the first choice,
    or the nearest step, where that is not on offer)."""
    temps = _increasing("temperatures", temperatures, zero_ok=False)
    hints = _increasing("hint_weights", hint_weights, zero_ok=True)
    check_choices("distillation modes", tuple(modes), KD_MODES)
    knobs = (
        _ordinal("finetune.temperature", temps, settings.temperature),
        _kd_weight(settings.kd_weight),
        Knob(
            name="finetune.kd_mode",
            kind="choice",
            choices=tuple(modes),
            identity=_given_or_first(settings.kd_mode, tuple(modes)),
        ),
        _ordinal("finetune.hint_weight", hints, settings.hint_weight),
    )
    return KnobSpace(tuple(k for k in knobs if k.name.removeprefix("finetune.") in reads))


def _increasing(what: str, values: Sequence[float], *, zero_ok: bool) -> tuple[float, ...]:
    """``values`` as floats: distinct, increasing, positive (or also 0 where ``zero_ok``)."""
    floats = tuple(float(v) for v in values)
    smallest_ok = bool(floats) and (floats[0] >= 0 if zero_ok else floats[0] > 0)
    if not smallest_ok or list(floats) != sorted(set(floats)):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{what} {list(values)}: give distinct increasing numbers {bound}")
    return floats


def _ordinal(name: str, choices: tuple[float, ...], given: float) -> Knob:
    identity = _given_or_first(float(given), choices)
    return Knob(name=name, kind="ordinal", choices=choices, identity=identity)


def _given_or_first(given: Value, choices: tuple[Value, ...]) -> Value:
    return given if given in choices else choices[0]


def _kd_weight(given: float) -> Knob:
    nearest = round(round(given / KD_WEIGHT_STEP) * KD_WEIGHT_STEP, 6)
    return Knob(
        name="finetune.kd_weight",
        kind="float",
        low=0.0,
        high=1.0,
        step=KD_WEIGHT_STEP,
        identity=nearest,
    )
