"""Average the weights of models fine-tuned from the same start (a "model soup", WiSE-FT).

    python -m training.soup --model old.keras --model new.keras --weight 0.5 --weight 0.5 --output soup.keras

Fine-tuning on new sources moves a model toward them and a little away from what it
knew; interpolating the weights of the model before and after often keeps most of
both (Wortsman et al., "Robust fine-tuning of zero-shot models", 2022). The models
must share the architecture and have been fine-tuned from one another; choose the
weights on validation data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def average_weights(weight_lists: list[list[np.ndarray]], mix: list[float]) -> list[np.ndarray]:
    """Per-tensor weighted mean of several models' ``get_weights()`` (mix sums to 1)."""
    if len(weight_lists) != len(mix) or not weight_lists:
        raise ValueError("give one mixing weight per model")
    if abs(sum(mix) - 1.0) > 1e-6 or min(mix) < 0:
        raise ValueError(f"mixing weights must be >= 0 and sum to 1, got {mix}")
    shapes = [[w.shape for w in ws] for ws in weight_lists]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("the models do not share one architecture")
    return [sum(m * ws[i] for m, ws in zip(mix, weight_lists)).astype(weight_lists[0][i].dtype)
            for i in range(len(weight_lists[0]))]


def recipe_path(soup_path: str | Path) -> Path:
    """Beside the soup: which models it averages and with what weights (export puts it in the card)."""
    return Path(soup_path).with_suffix(".soup.json")


def read_recipe(model_path: str | Path) -> dict | None:
    """The soup recipe of ``model_path``; None when it is not a soup (or the file is unreadable)."""
    try:
        recipe = json.loads(recipe_path(model_path).read_text())
    except (OSError, ValueError):
        return None
    return recipe if isinstance(recipe, dict) else None


def main(argv: list[str] | None = None) -> int:
    from model.architecture import build_model, load_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="a .keras model (repeat)")
    p.add_argument("--weight", action="append", type=float, default=None, help="its mixing weight (default: equal)")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    mix = args.weight or [1.0 / len(args.model)] * len(args.model)
    models = [load_model(path) for path in args.model]
    soup = build_model(int(models[0].input_shape[1]))
    soup.set_weights(average_weights([m.get_weights() for m in models], mix))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    soup.save(args.output)
    recipe = {"models": args.model, "weights": mix}
    recipe_path(args.output).write_text(json.dumps(recipe, indent=2))
    print(json.dumps({"output": args.output, **recipe}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
