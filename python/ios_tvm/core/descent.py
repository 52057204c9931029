"""Choosing among a stage's kernel variants: a steepest descent (:func:`refine_stage`), pure, over
any measuring function (the measured driver is :func:`ios_tvm.driver.variants.select_variants`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping


@dataclass(frozen=True)
class StageRefinement:
    """What :func:`refine_stage` found for one stage: ``choice`` maps a node to the rank of the
    variant it runs (only nodes off their default), ``base_s`` / ``latency_s`` are the stage's
    latency with the default kernels and with ``choice`` (confirmed side by side), and
    ``evaluated`` counts the measurements made."""

    choice: dict[int, int]
    base_s: float
    latency_s: float
    evaluated: int


def refine_stage(options: Mapping[int, int], measure: Callable[[Mapping[int, int]], float], *,
                 max_moves: int = 4, min_gain: float = 0.03) -> StageRefinement:
    """Steepest descent over the variants of one stage's kernels.

    Each move measures every change of one kernel's variant from the current choice and takes
    the best, so two kernels that slow each other down are untangled by changing the one whose
    runner-up costs least, not merely the first one tried.

    Parameters
    ----------
    options
        Node -> number of variants it has (nodes with one are left alone).
    measure
        Seconds of the stage when each node in the mapping runs the variant of that rank (the
        others their default, rank 0).
    max_moves
        Most moves; the descent also stops when no change gains enough.
    min_gain
        A move is taken only when the stage gets faster by more than this fraction, and the
        final choice kept only when it still beats the defaults by that much measured side by
        side.
    """
    nodes = sorted(v for v, n in options.items() if n > 1)
    base = measure({})
    evaluated = 1
    choice: dict[int, int] = {}
    best = base
    for _ in range(max_moves):
        move, move_t = None, best * (1 - min_gain)
        for v in nodes:
            for k in range(options[v]):
                if k == choice.get(v, 0):
                    continue
                trial = {u: r for u, r in {**choice, v: k}.items() if r}
                t = measure(trial)
                evaluated += 1
                if t < move_t:
                    move, move_t = trial, t
        if move is None:
            break
        choice, best = move, move_t
    if not choice:
        return StageRefinement({}, base, base, evaluated)
    base_again, final = measure({}), measure(choice)  # confirm side by side
    evaluated += 2
    if final < base_again * (1 - min_gain):
        return StageRefinement(choice, base_again, final, evaluated)
    return StageRefinement({}, base_again, base_again, evaluated)
