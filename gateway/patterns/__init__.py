"""Chart patterns by a spiking neural network: synthetic training data (synthetic), price
windows to spike trains (encoding), leaky integrate-and-fire neurons and the recogniser (snn),
the classical baseline (baseline), and the service that reads bars and classifies them."""

from gateway.patterns.service import MAX_WINDOW, MIN_WINDOW, Detection, PatternService
from gateway.patterns.synthetic import PATTERNS

__all__ = ["MAX_WINDOW", "MIN_WINDOW", "PATTERNS", "Detection", "PatternService"]
