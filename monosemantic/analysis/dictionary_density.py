"""Where one feature's firing density sits among all the dictionary's: the histogram of every
feature's density (the analysis' stored `density` column: the share of analysed tokens it fires on)
over log-spaced bins, with the features that never fired counted apart (log 0 has no bin).

    hist = density_histogram(store.column("density"))   # {"log_edges", "counts", "never"}
"""

from __future__ import annotations

import math

PER_DECADE = 4  # bins per decade of density


def density_histogram(densities: list[float], per_decade: int = PER_DECADE) -> dict:
    """{"log_edges": log10 bin edges, from the decade of the lowest nonzero density up to 1 (density
    1 in the last bin), "counts": features per bin, "never": features of density 0}."""
    fired = [d for d in densities if d > 0]
    low = math.floor(math.log10(min(fired))) if fired else -1
    edges = [low + b / per_decade for b in range(-low * per_decade + 1)]  # ... up to log10(1) = 0
    counts = [0] * (len(edges) - 1)
    for d in fired:
        b = math.floor((math.log10(d) - low) * per_decade + 1e-9)
        counts[min(b, len(counts) - 1)] += 1
    return {"log_edges": edges, "counts": counts, "never": len(densities) - len(fired)}
