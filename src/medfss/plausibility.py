"""Is a predicted organ volume plausible against the support's?

The support mask tells how large the organ is in another patient. Organs
differ between adults, but rarely by a factor of three in volume; a
prediction outside [1/3, 3] times the support's volume (both in mL, each
with its own scan's voxel spacing) usually means that the model segmented
something else (air, another organ) or missed the organ, and the user is
told so. The factor is a bound on anatomy, not a tuned threshold: it flags,
it never changes the output. With several supports their mean volume is the
reference. A sparsely labelled support (unlabelled slices inside the organ)
under-counts its volume, which the message says.
"""

from __future__ import annotations

from collections.abc import Sequence

VOLUME_RATIO = 3.0  # a plausible prediction lies within [1/3, 3] times the support's volume


def volume_warning(name: str, predicted_ml: float, support_ml: Sequence[float]) -> str | None:
    """A one-line warning when ``predicted_ml`` is implausible against the supports' volumes, else None."""
    reference = sum(support_ml) / len(support_ml) if support_ml else 0.0
    if reference <= 0:
        return None
    ratio = predicted_ml / reference
    if 1.0 / VOLUME_RATIO <= ratio <= VOLUME_RATIO:
        return None
    return (f"{name}: the predicted {predicted_ml:.1f} mL is {ratio:.2f} times the support's {reference:.1f} mL "
            f"(plausible: 1/{VOLUME_RATIO:g} to {VOLUME_RATIO:g} times); check the overlay (a sparsely labelled "
            "support under-counts its volume)")
