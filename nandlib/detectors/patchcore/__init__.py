"""PatchCore (Roth et al., CVPR 2022), faithful to amazon-science/patchcore-inspection (IM224 baseline).

Book: ``method.md``, "PatchCore". Deliberate deviations from the official code:

- Aggregation pools each layer's unfolded ``C·p²`` vector *before* the bilinear resize to the
  first layer's grid (officially after). Both steps are linear and act on different axes, so the
  features are equal up to float rounding, with 9× less memory for layer3.
- The backbone is run stage by stage up to the last requested layer instead of through forward
  hooks that raise an exception; the outputs are the same.
- Coreset randomness comes from ``seed`` alone: the projection is ``nn.Linear(D, 128, bias=False)``'s
  default init under ``torch.manual_seed(seed)`` (officially the global torch RNG after backbone
  construction and data loading, so not reproducible here); the starting points are
  ``np.random.RandomState(seed).choice`` (the official global numpy draw right after
  ``np.random.seed(seed)``). Both can be overridden (:meth:`PatchCore.fit_features`).
- A selected coreset point is never selected again (officially possible when points duplicate).
- ``coreset_ratio=1`` keeps every feature (the official identity sampler); a ratio keeping no
  feature raises ``ValueError``.
- Nearest neighbours are found by exact search in torch (no faiss); the returned squared distances
  are recomputed as ``Σ(q − m)²`` rather than faiss's clamped ``|q|² + |m|² − 2q·m``.
- ``score="reweighted"`` adds paper Eq. 7, which the official code lacks (off by default).
- No min-max normalisation of scores or maps over the test set (``bin/run_patchcore.py`` does it
  for ensembles); raw maps are returned.
"""

from nandlib.detectors.patchcore.coreset import approximate_greedy_coreset, random_projection, starting_points
from nandlib.detectors.patchcore.detector import PatchCore
from nandlib.detectors.patchcore.features import aggregate_patches, extract_layers, load_backbone
from nandlib.detectors.patchcore.scoring import anomaly_maps, nearest_neighbours, reweighted_scores

__all__ = [
    "PatchCore",
    "aggregate_patches",
    "anomaly_maps",
    "approximate_greedy_coreset",
    "extract_layers",
    "load_backbone",
    "nearest_neighbours",
    "random_projection",
    "reweighted_scores",
    "starting_points",
]
