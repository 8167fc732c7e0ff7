"""How a membership-inference figure and the recovery relay's hops are shown to a reader.

Every human-facing rendering (the live display, ``simulate``'s tables, ``compare``'s terminal
table and ``compare.md``, ``sweep.md``) calls these functions, so they all say the same thing;
the machine-readable files (``summary.json``, ``compare.csv``/``.json``, ``sweep.csv``/``.json``)
keep the raw numbers.
"""

from __future__ import annotations

import math

MIA_MIN_POWER = 0.6
"""Below this attack power an MIA figure is shown as ``no power (0.55)``, not as a percentage.

The power is the attack's balanced accuracy on held-out members vs non-members (0.5 =
chance, see :mod:`fedforget.attacks`). Two reasons put the line at 0.6:

- noise: the smallest member sets fedforget attacks (the overfitting federations, about 70
  retained samples) measure the power with a standard deviation of about 0.04 at chance
  (``0.354 / sqrt(n)`` for a cross-fitted balanced accuracy on ``n`` members and ``n``
  non-members), so 0.6 is about 2.5 standard deviations above chance: below it the attack
  cannot be told apart from a coin;
- meaning: an attack right on fewer than 6 samples in 10 places its threshold mostly by
  chance, and its D_f share then follows the threshold, not membership (seen: a digits
  model at chance, 9.9 % test accuracy, had all of D_f called members by an attack of power
  0.49; a bare "100 %" reads as D_f remembered, when the model had learnt nothing).
"""

MISSING = "-"


def _is_missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_mia(success: float | None, power: float | None, spread: float | None = None) -> str:
    """An MIA figure with its power: ``31.2 % (power 0.74)``, or ``no power (0.50)``.

    Parameters
    ----------
    success : float or None
        The share of D_f the attack calls members, as a fraction (``mia_success``).
    power : float or None
        The attack's balanced accuracy on members vs non-members (``mia_power``).
    spread : float or None
        A standard deviation of ``success`` over seeds, shown as ``31.2 ± 2.1 %``.

    Returns
    -------
    str
        ``-`` without a figure; ``no power (<power>)`` when ``power`` is below
        :data:`MIA_MIN_POWER` (the figure is noise, so it is not shown); otherwise the
        percentage with its power, ``power ?`` when the power was not recorded.
    """
    if _is_missing(success):
        return MISSING
    if not _is_missing(power) and power < MIA_MIN_POWER:
        return f"no power ({power:.2f})"
    share = f"{100 * success:.1f}"
    if not _is_missing(spread):
        share += f" ± {100 * spread:.1f}"
    strength = "power ?" if _is_missing(power) else f"power {power:.2f}"
    return f"{share} % ({strength})"


MIA_SUCCESS = "mia_success"
MIA_POWER = "mia_power"


def power_key(success_key: str) -> str:
    """The key of the power that belongs to an MIA key (``end.mia_success`` ->
    ``end.mia_power``), so rows keyed by phase find the right one."""
    return success_key.replace(MIA_SUCCESS, MIA_POWER)


def is_mia_key(key: str) -> bool:
    """Whether ``key`` holds an MIA figure (``mia_success``, ``<phase>.mia_success``)."""
    return key == MIA_SUCCESS or key.endswith("." + MIA_SUCCESS)


RELAY_STOPS = {
    "standard": "objective met",
    "max_hops": "hop limit reached",
    "budget": "time budget spent",
    "no_training": "no candidate could train",
}
"""Why the relay ended (``deletion.relay_stop``), in words."""


def relay_hops_text(
    tried: int, kept: int, max_hops: int | None = None, stop: str | None = None
) -> str:
    """The relay's hops, said one way everywhere: ``2 of at most 5 tried, 0 kept``.

    ``tried`` counts the hops the relay ran (``deletion.relay_hops``), ``kept`` those whose
    model it kept, ``max_hops`` its limit, ``stop`` why it ended (:data:`RELAY_STOPS`).
    """
    limit = "" if max_hops is None else f" of at most {max_hops}"
    text = f"{tried}{limit} tried, {kept} kept"
    if stop is not None:
        text += f" ({RELAY_STOPS.get(stop, stop)})"
    return text
