"""The demo behind ``bash demo.sh``: build a tiny LLaMA from a shipped config and run it.

Later pipeline stages (tokenizer, preprocessing, training, inference) join it as they land.
"""

from __future__ import annotations

import argparse
import logging
import os

import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.models.model import build_model

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger("tencentpretrain.demo")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config_path", default=os.path.join(REPO_ROOT, "models/llama/tiny_config.json"))
    parser.add_argument("--vocab_size", type=int, default=1000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(levelname)s] %(message)s")

    config = load_model_config(args.config_path)
    model = build_model(config, args.vocab_size).eval()
    params = sum(p.numel() for p in model.parameters())
    logger.info("built %s: %d layers, hidden %d, %d parameters", args.config_path, config.layers_num,
                config.hidden_size, params)
    ids = torch.randint(0, args.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model.logits(ids)
        loss = model(ids[:, :-1], ids[:, 1:], torch.ones_like(ids[:, :-1])).loss
    logger.info("forward pass: logits %s, untrained loss %.3f (ln(vocab) = %.3f)", tuple(logits.shape),
                loss.item(), torch.log(torch.tensor(float(args.vocab_size))).item())


if __name__ == "__main__":
    main()
