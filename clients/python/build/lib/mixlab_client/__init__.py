"""mixlab-client: talk to a mixlab server from your training pipeline (httpx only; Python 3.9+).

from mixlab_client import Client
exp = Client(url, api_key=KEY).create_experiment(name=..., executor="external", domains=[...])
exp.start()
trial = exp.ask()                     # a mixture to train on, under a lease
exp.tell(trial, losses={...})         # its per-domain validation losses
print(exp.recommendation(wait=True))
"""

from mixlab_client.client import ApiError, Client, Experiment, LeaseLost, OnlineSession, Trial
from mixlab_client.datasets import interleave_datasets, interleave_probabilities, mixture_sampler

__all__ = [
    "ApiError",
    "Client",
    "Experiment",
    "LeaseLost",
    "OnlineSession",
    "Trial",
    "interleave_datasets",
    "interleave_probabilities",
    "mixture_sampler",
]
__version__ = "0.1.0"
