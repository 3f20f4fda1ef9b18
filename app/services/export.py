"""The recommended mixture as a file to download: JSON, YAML, or a ready-to-paste HF datasets snippet."""

from __future__ import annotations

import json
from typing import Any, Literal

import yaml
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.models import Experiment
from app.services.recommendations import latest_recommendation

ExportFormat = Literal["json", "yaml", "hf"]


def export_mixture(*, session: Session, experiment: Experiment, fmt: ExportFormat) -> tuple[str, str, str]:
    """The latest recommendation as (body, media type, file name), ready to download."""
    rec = latest_recommendation(session=session, experiment=experiment)
    if rec is None:
        raise NotFound(
            "no recommendation yet: it appears after the first batch of runs", code="no_recommendation"
        )
    weights = dict(zip(experiment.domain_names, map(float, rec.weights), strict=True))
    doc = {
        "experiment": experiment.id,
        "name": experiment.name,
        "recommendation": rec.id,
        "strategy": rec.strategy,
        "final": rec.final,
        "n_runs": rec.n_runs,
        "predicted_loss": rec.predicted_loss,
        "std": rec.std,
        "weights": weights,
    }
    stem = f"mixlab-experiment-{experiment.id}-mixture"
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n", "application/json", f"{stem}.json"
    if fmt == "yaml":
        return yaml.safe_dump(doc, sort_keys=False), "application/yaml", f"{stem}.yaml"
    return hf_snippet(doc), "text/x-python", f"{stem}.py"


def hf_snippet(doc: dict[str, Any]) -> str:
    """A ready-to-paste ``datasets.interleave_datasets`` call sampling the domains at the mixture."""
    unused = [name for name, w in doc["weights"].items() if w <= 0]
    loss = doc["predicted_loss"]
    expected = "" if loss is None else f"; predicted target loss {loss:.4f}"
    if loss is not None and doc["std"] is not None:
        expected += f" ± {doc['std']:.4f}"
    lines = [
        f"# Mixture recommended by mixlab for experiment {doc['experiment']} ({doc['name']!r}),",
        f"# recommendation {doc['recommendation']} by {doc['strategy']} from {doc['n_runs']} runs{expected}.",
        "from datasets import interleave_datasets, load_dataset",
        "",
        "weights = {",
        *(f"    {name!r}: {w!r}," for name, w in doc["weights"].items() if w > 0),
        "}",
        *([f"# Left out at weight 0: {', '.join(unused)}."] if unused else []),
        "# Point each domain at its data (here: one JSONL file per domain with a 'text' field).",
        "domains = {",
        "    name: load_dataset('json', data_files=f'{name}.jsonl', split='train', streaming=True)",
        "    for name in weights",
        "}",
        "mixed = interleave_datasets(",
        "    [domains[name] for name in weights],",
        "    probabilities=[weights[name] for name in weights],",
        "    seed=0,",
        ")",
    ]
    return "\n".join(lines) + "\n"
