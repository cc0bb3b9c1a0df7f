"""Plot the loss curve of a training log (pretrain.py --log_path, or its captured stderr) into a PNG.

    python3 scripts/plot_loss.py --log_path train.log --output_path loss.png [--smooth 10]

Reads the report lines (``| step/total steps| ... | loss L| ...``) and, when present, the evaluation lines
(``| eval at step S| loss L| ...``). Needs matplotlib (pip install matplotlib).
"""

from __future__ import annotations

import argparse

from tencentpretrain.cli import run
from tencentpretrain.training.logs import plot_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log_path", required=True, help="training log to read")
    parser.add_argument("--output_path", default="loss.png", help="PNG to write")
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window over report points")
    parser.add_argument("--title", default=None, help="plot title (default: the log file name)")
    args = parser.parse_args()
    plot_loss(args.log_path, args.output_path, smooth=args.smooth, title=args.title)


if __name__ == "__main__":
    run(main)
