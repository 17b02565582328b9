"""The article's two weight scripts as commands: fixed dummy weights, or a brief training run.

    python -m target_server.weights dummy simple_model.pt
    python -m target_server.weights train simple_model.pt --bundle

Both save a state_dict (or, with --bundle, {'model_state', 'input_size', 'notes', 'created_at'})
that the server loads with weights_only=True.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys

import torch
import torch.nn as nn
import torch.optim as optim

from target_server.models import SimpleModel, fill_article_dummy_weights

ARTICLE_X = [[1.0, 2.0, 3.0], [0.5, 0.2, 0.1], [2.0, 1.0, 0.0]]
ARTICLE_Y = [[1.0], [0.5], [1.8]]


def dummy_model() -> SimpleModel:
    return fill_article_dummy_weights(SimpleModel())


def trained_model(epochs: int = 200, lr: float = 0.1, seed: int = 0) -> tuple[SimpleModel, float]:
    """SGD on the article's three-row data set; returns the model and its final MSE loss."""
    torch.manual_seed(seed)
    x = torch.tensor(ARTICLE_X, dtype=torch.float32)
    y = torch.tensor(ARTICLE_Y, dtype=torch.float32)
    model = SimpleModel()
    optimizer = optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    return model.eval(), float(loss.detach())


def save(model: nn.Module, path: str, *, bundle: bool, notes: str) -> None:
    if bundle:
        torch.save({"model_state": model.state_dict(), "input_size": 3, "notes": notes,
                    "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}, path)
    else:
        torch.save(model.state_dict(), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m target_server.weights",
                                     description="Write weights for the linear model.")
    parser.add_argument("kind", choices=("dummy", "train"),
                        help="dummy: every weight 0.1, bias 0; train: 200 SGD steps on the article's data")
    parser.add_argument("path", help="output file, e.g. simple_model.pt")
    parser.add_argument("--bundle", action="store_true", help="save with metadata (input size, notes, date)")
    parser.add_argument("--epochs", type=int, default=200, help="training steps (train only)")
    args = parser.parse_args(argv)
    if args.kind == "dummy":
        save(dummy_model(), args.path, bundle=args.bundle, notes="fixed dummy weights (0.1, bias 0)")
        print(f"Saved {args.path} (fixed dummy weights)")
    else:
        model, loss = trained_model(args.epochs)
        save(model, args.path, bundle=args.bundle, notes=f"trained {args.epochs} steps, mse={loss:.4g}")
        print(f"Trained ({args.epochs} steps, final MSE {loss:.4g}) and saved {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
