"""The torch version pyproject.toml allows must have every torch feature the library calls unconditionally."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import REPO_ROOT

# feature -> (where it is used, first torch release that has it)
FEATURES = {
    "scaled_dot_product_attention(enable_gqa=...)": ("tencentpretrain/layers/attention.py", (2, 5)),
    "torch.optim.Adafactor": ("tencentpretrain/training/optimizers/adafactor.py", (2, 5)),
    "torch._fused_adamw_ on CPU tensors": ("tencentpretrain/training/optimizers/adamw.py", (2, 4)),
}
USES = {
    "scaled_dot_product_attention(enable_gqa=...)": "enable_gqa=",
    "torch.optim.Adafactor": "torch.optim.Adafactor",
    "torch._fused_adamw_ on CPU tensors": "torch._fused_adamw_",
}


def torch_floor() -> tuple[int, int]:
    text = (Path(REPO_ROOT) / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'"torch>=(\d+)\.(\d+)', text)
    assert match, "pyproject.toml must give torch a lower bound"
    return int(match.group(1)), int(match.group(2))


def test_the_floor_has_every_feature_the_library_uses():
    floor = torch_floor()
    for feature, (path, since) in FEATURES.items():
        source = (Path(REPO_ROOT) / path).read_text(encoding="utf-8")
        assert USES[feature] in source, f"{path} no longer uses {feature}: update this table"
        assert floor >= since, f"{path} uses {feature} (torch >= {since[0]}.{since[1]}), but pyproject allows {floor}"


def test_setup_falls_back_to_the_same_floor():
    setup = (Path(REPO_ROOT) / "setup.sh").read_text(encoding="utf-8")
    floor = torch_floor()
    assert f'"torch>={floor[0]}.{floor[1]}"' in setup
