"""Federated learning across institutions (tenants) with Flower.

models (Federation, FederationMember), service (membership and visibility), data (a
participant's own features and labels from the market twin), model (numpy logistic
regression), dp (clipping, noise, privacy accounting), flower (ClientApp and the server-side
orchestration), runner (the embedded Flower simulation), kind (the `federated.train` job),
app/ (the Flower App for SuperLink/SuperNode deployments). Nothing here imports flwr or ray at
import time; flower, runner and app do when a run starts.
"""
