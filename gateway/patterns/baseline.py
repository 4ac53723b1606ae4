"""The classical baseline: nearest neighbours under z-normalised Euclidean distance.

Every labelled training window is a template. A window is resampled to a fixed length by bin
means (as the spiking encoder does, so both see the same input) and z-normalised (mean 0,
standard deviation 1), which removes price level and pattern height; the distance between two
z-normalised series of length L is sqrt(2 L (1 - r)), r their Pearson correlation, so the
nearest template is the one with the highest normalised cross-correlation at zero lag. This is
the distance the matrix profile is built on, and 1-NN under it is the standard strong baseline
of time-series classification. No DTW: resampling already aligns windows of different lengths,
and DTW's warping would let a head-and-shoulders match a double top by stretching a shoulder.

Chosen over class-mean templates because a pattern class is not one shape (a breakout goes up
or down; peaks move), and a mean of shapes is none of them; and because "NONE" (random walks)
has no template at all, whereas its members are perfectly good neighbours.

The answer is a vote of the k nearest (k = 1 by default); probabilities are vote shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gateway.patterns.encoding import Encoder
from gateway.patterns.synthetic import PATTERNS, SyntheticSet


def znormalise(shapes: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit L2 norm (z-normalised, up to the constant sqrt(L)), so a
    dot product of two rows is their correlation."""
    centred = shapes - shapes.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(centred, axis=-1, keepdims=True)
    return centred / np.where(norm > 0, norm, 1.0)


@dataclass(frozen=True, eq=False)
class NearestTemplate:
    templates: np.ndarray  # (M, L), rows z-normalised to unit norm
    labels: np.ndarray  # (M,)
    k: int
    encoder: Encoder

    @classmethod
    def fit(cls, data: SyntheticSet, *, steps: int = 32, k: int = 1) -> NearestTemplate:
        encoder = Encoder(steps=steps)
        shapes = np.stack([encoder.resample(w) for w in data.windows])
        return cls(znormalise(shapes), np.asarray(data.labels), k, encoder)

    def _vote(self, similarity: np.ndarray) -> np.ndarray:
        """(batch, classes) vote shares of the k most similar templates."""
        if self.k == 1:
            best = similarity.argmax(axis=-1)
            return np.eye(len(PATTERNS))[self.labels[best]]
        nearest = np.argpartition(-similarity, self.k - 1, axis=-1)[..., :self.k]
        votes = np.zeros((*similarity.shape[:-1], len(PATTERNS)))
        for j in range(self.k):
            np.add.at(votes, (np.arange(len(nearest)), self.labels[nearest[:, j]]), 1.0)
        return votes / self.k

    def probabilities(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        shapes = znormalise(np.stack([self.encoder.resample(w) for w in windows]))
        return self._vote(shapes @ self.templates.T)

    def predict(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        return self.probabilities(windows).argmax(axis=1)

    def predict_one(self, prices: np.ndarray) -> int:
        """The class of one window (1-NN, or the k-vote), on the latency-critical path."""
        shape = self.encoder.resample(prices)
        shape = shape - shape.mean()
        similarity = self.templates @ shape  # the norm of the query does not change the order
        if self.k == 1:
            return int(self.labels[int(similarity.argmax())])
        return int(self._vote(similarity[None, :])[0].argmax())
