"""Record the original TencentPretrain's model configs and architecture options, for
tests/core/test_original_configs.py (which cannot read the original's checkout).

    cd /path/to/TencentPretrain && python /path/to/this/repo/tests/assets/make_original_configs.py \
        /path/to/this/repo/tests/assets/original_configs/original.json

Writes {"configs": {path under models/: the JSON object}, "model_options": [the dest of every flag that the
original's model_opts (with its vision and audio options) defines]}.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys


def main(path: str) -> None:
    sys.path.insert(0, os.getcwd())  # the original's checkout
    from tencentpretrain.opts import model_opts

    configs = {}
    for file in sorted(glob.glob("models/**/*config.json", recursive=True)):
        if not os.path.basename(file).startswith("deepspeed"):
            with open(file, encoding="utf-8") as f:
                configs[os.path.relpath(file, "models")] = json.load(f)
    parser = argparse.ArgumentParser()
    model_opts(parser)
    options = sorted(a.dest for a in parser._actions if a.dest != "help")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"configs": configs, "model_options": options}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(configs)} configs, {len(options)} options -> {path}")


if __name__ == "__main__":
    main(sys.argv[1])
