"""Checkpoint I/O: the original's .bin format, safetensors, sharded directories, strictness, atomic saves."""

import collections
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from tencentpretrain.checkpoint import (
    atomic_path,
    load_checkpoint,
    load_state_dict,
    save_checkpoint,
    save_file,
)
from tencentpretrain.convert.stream import ShardLayout
from tencentpretrain.errors import CheckpointError
from tencentpretrain.models.model import build_model
from tests.core.test_model import original_llama_keys
from tests.helpers import tiny_llama_config, write_sharded

V, H, F_, HEADS, KV, LAYERS, EPS = 120, 64, 176, 4, 2, 2, 1e-6


def _original_state_dict() -> collections.OrderedDict:
    """A state_dict shaped as TencentPretrain writes it for a tiny GQA LLaMA (torch.save of an OrderedDict)."""
    g = torch.Generator().manual_seed(3)
    kv = KV * H // HEADS
    shapes = {
        "embedding.word.embedding.weight": (V, H),
        "linear_layers.0.weight": (H, H), "linear_layers.1.weight": (kv, H), "linear_layers.2.weight": (kv, H),
        "final_linear.weight": (H, H), "linear_gate.weight": (F_, H), "linear_1.weight": (F_, H),
        "linear_2.weight": (H, F_), "layer_norm_1.weight": (H,), "layer_norm_2.weight": (H,),
        "encoder.layer_norm.weight": (H,), "target.lm.output_layer.weight": (V, H),
    }
    state = collections.OrderedDict()
    for key in original_llama_keys(LAYERS):
        shape = next(s for suffix, s in shapes.items() if key.endswith(suffix))
        scale = 0.1 if len(shape) == 1 else 0.08
        state[key] = (1.0 if len(shape) == 1 else 0.0) + scale * torch.randn(shape, generator=g)
    return state


def _original_semantics_logits(state: dict, ids: torch.Tensor) -> torch.Tensor:
    """The original's LLaMA forward, written from its description: complex-number RoPE on adjacent pairs
    (theta 10000), RMSNorm ``x * rsqrt(mean(x^2) + eps) * w``, SwiGLU, repeat_kv, additive -10000 causal mask."""
    hd = H // HEADS
    freqs = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
    angles = torch.outer(torch.arange(ids.shape[1]).float(), freqs)
    freqs_cis = torch.polar(torch.ones_like(angles), angles)

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w

    def rope(x):  # (B, L, h, d)
        xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs_cis[None, :, None, :]).flatten(3)

    h = state["embedding.word.embedding.weight"][ids]
    batch, length = ids.shape
    mask = (1.0 - torch.tril(torch.ones(length, length))) * -10000.0
    for i in range(LAYERS):
        p = lambda name: state[f"encoder.transformer.{i}.{name}"]  # noqa: E731
        x = rms(h, p("layer_norm_1.weight"))
        q = (x @ p("self_attn.linear_layers.0.weight").T).view(batch, length, HEADS, hd)
        k = (x @ p("self_attn.linear_layers.1.weight").T).view(batch, length, KV, hd)
        v = (x @ p("self_attn.linear_layers.2.weight").T).view(batch, length, KV, hd)
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(HEADS // KV, 2), v.repeat_interleave(HEADS // KV, 2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1)
        attn = (probs @ v).transpose(1, 2).reshape(batch, length, H)
        h = h + attn @ p("self_attn.final_linear.weight").T
        x = rms(h, p("layer_norm_2.weight"))
        gate = F.silu(x @ p("feed_forward.linear_gate.weight").T) * (x @ p("feed_forward.linear_1.weight").T)
        h = h + gate @ p("feed_forward.linear_2.weight").T
    h = rms(h, state["encoder.layer_norm.weight"])
    return h @ state["target.lm.output_layer.weight"].T


def test_original_bin_loads_strictly_with_original_semantics(tmp_path):
    path = str(tmp_path / "llama.bin")
    state = _original_state_dict()
    torch.save(state, path)
    model = build_model(tiny_llama_config(max_seq_length=64), V, init=False).eval()
    load_checkpoint(model, path)
    ids = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model.logits(ids), _original_semantics_logits(state, ids), atol=1e-4, rtol=1e-4)


def test_missing_layer_is_named(tmp_path):
    state = _original_state_dict()
    for key in [k for k in state if k.startswith("encoder.transformer.1.")]:
        del state[key]
    path = str(tmp_path / "broken.bin")
    torch.save(state, path)
    model = build_model(tiny_llama_config(), V, init=False)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, path)
    message = str(info.value)
    assert "broken.bin" in message and "missing keys (9)" in message
    assert "encoder.transformer.1.self_attn.linear_layers.0.weight" in message


def test_unexpected_and_shape_mismatch_are_listed_with_both_shapes(tmp_path):
    state = _original_state_dict()
    state["encoder.transformer.9.extra.weight"] = torch.zeros(1)
    path = str(tmp_path / "x.bin")
    torch.save(state, path)
    model = build_model(tiny_llama_config(), V + 8, init=False)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, path)
    message = str(info.value)
    assert "unexpected keys (1): encoder.transformer.9.extra.weight" in message
    assert f"embedding.word.embedding.weight: checkpoint ({V}, 64) vs model ({V + 8}, 64)" in message
    assert f"the checkpoint has {V} vocabulary rows, the model {V + 8}" in message


def test_allow_missing_permits_only_the_named_keys(tmp_path):
    model = build_model(tiny_llama_config(), V)
    path = str(tmp_path / "part.bin")
    state = {k: v for k, v in model.state_dict().items() if "layer_norm" not in k}
    torch.save(state, path)
    load_checkpoint(model, path, allow_missing=["layer_norm"])
    with pytest.raises(CheckpointError):
        load_checkpoint(model, path)


@pytest.mark.parametrize("name", ["model.safetensors", "model.bin"])
def test_save_and_load_round_trip(tmp_path, name):
    model = build_model(tiny_llama_config(tie_weights=True), V)
    path = str(tmp_path / name)
    save_checkpoint(model, path)
    fresh = build_model(tiny_llama_config(tie_weights=True), V)
    load_checkpoint(fresh, path)
    for key, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], tensor)
    assert sorted(os.listdir(tmp_path)) == [name, name + ".sha256"]  # no temporaries left


@pytest.mark.parametrize("index_name", ["tencentpretrain_model.bin.index.json", "pytorch_model.bin.index.json"])
def test_sharded_directory_loads(tmp_path, index_name):
    model = build_model(tiny_llama_config(), V)
    directory = str(tmp_path / "blocks")
    names = write_sharded(model.state_dict(), directory, max_shard_bytes=40_000,
                          layout=ShardLayout(index_name, "tencentpretrain_model-{index}.bin"))
    assert len(names) > 2
    with open(os.path.join(directory, index_name)) as f:
        assert set(json.load(f)["weight_map"]) == set(model.state_dict())
    with torch.device("meta"):
        empty = build_model(tiny_llama_config(), V)
    load_checkpoint(empty, directory)
    ids = torch.randint(0, V, (1, 5))
    torch.testing.assert_close(empty.eval().logits(ids), model.eval().logits(ids))


def test_atomic_save_keeps_the_previous_file_on_failure(tmp_path):
    path = str(tmp_path / "ckpt.bin")
    save_file({"a": torch.ones(2)}, path)
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("crash during save")
    assert torch.equal(load_state_dict(path)["a"], torch.ones(2))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.bin", "ckpt.bin.sha256"]


def test_corrupt_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.bin: cannot read checkpoint"):
        load_state_dict(str(path))
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(str(tmp_path / "nope.bin"))


# ---------------------------------------------------------------------- checksums and non-finite values
def _overwrite_middle(path: str, data: bytes) -> None:
    """Overwrite ``len(data)`` bytes in the middle of ``path``, as a bad disk or a broken copy would."""
    size = os.path.getsize(path)
    assert size > 2 * len(data)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(data)


@pytest.mark.parametrize("name", ["model.bin", "model.safetensors"])
def test_corrupted_file_fails_its_checksum(tmp_path, name):
    from tencentpretrain.checkpoint import sha256_file

    model = build_model(tiny_llama_config(), V)
    path = str(tmp_path / name)
    save_checkpoint(model, path)
    with open(path + ".sha256") as f:
        assert f.read() == f"{sha256_file(path)}  {name}\n"  # sha256sum -c format
    _overwrite_middle(path, bytes(16 * 1024))
    with pytest.raises(CheckpointError, match=f"{name}: checksum mismatch"):
        load_checkpoint(build_model(tiny_llama_config(), V), path)


def test_corrupted_shard_fails_the_index_checksum(tmp_path):
    model = build_model(tiny_llama_config(), V)
    directory = str(tmp_path / "blocks")
    names = write_sharded(model.state_dict(), directory, max_shard_bytes=40_000)
    with open(os.path.join(directory, "tencentpretrain_model.bin.index.json")) as f:
        assert sorted(json.load(f)["metadata"]["sha256"]) == sorted(names)
    assert not [n for n in os.listdir(directory) if n.endswith(".sha256")]  # the index holds them
    biggest = max(names, key=lambda n: os.path.getsize(os.path.join(directory, n)))
    _overwrite_middle(os.path.join(directory, biggest), bytes(16 * 1024))
    with pytest.raises(CheckpointError, match=f"{biggest}: checksum mismatch"):
        load_state_dict(directory)


def test_foreign_file_with_non_finite_values_names_the_tensor(tmp_path):
    state = build_model(tiny_llama_config(), V).state_dict()
    path = str(tmp_path / "foreign.bin")
    torch.save(state, path)  # no checksum: a file from elsewhere
    assert load_state_dict(path).keys() == state.keys()
    _overwrite_middle(path, b"\xff" * 16 * 1024)  # 0xffffffff is a NaN in float32
    bad_tensor = r"foreign.bin: tensor encoder\.\S+ has \d+ non-finite \(NaN or infinite\) values"
    with pytest.raises(CheckpointError, match=bad_tensor):
        load_state_dict(path)


def test_a_changed_file_with_a_stale_checksum_is_refused(tmp_path):
    path = str(tmp_path / "model.bin")
    save_file({"a": torch.ones(2)}, path)
    torch.save({"a": torch.zeros(2)}, path)  # rewritten by other means: the sidecar no longer matches
    with pytest.raises(CheckpointError, match="delete model.bin.sha256"):
        load_state_dict(path)


def test_vocabulary_hint_only_when_the_rows_differ():
    from tencentpretrain.checkpoint import check_state_dict

    key = "embedding.word.embedding.weight"
    with pytest.raises(CheckpointError) as info:
        check_state_dict({key: torch.Size([700, 64])}, {key: torch.zeros(700, 32)}, source="x.bin",
                         vocabulary_keys=(key,))
    assert "vocabulary rows" not in str(info.value) and "(700, 32) vs model (700, 64)" in str(info.value)
    with pytest.raises(CheckpointError, match="the checkpoint has 800 vocabulary rows, the model 700"):
        check_state_dict({key: torch.Size([700, 64])}, {key: torch.zeros(800, 64)}, source="x.bin",
                         vocabulary_keys=(key,))


FULL_DISK = """
import resource, signal, sys, torch
from tencentpretrain.checkpoint import save_file
from tencentpretrain.errors import CheckpointError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    save_file({"w": torch.zeros(1_000_000)}, sys.argv[1])
except CheckpointError as e:
    print(e)
"""


@pytest.mark.slow  # a subprocess with a file-size limit
@pytest.mark.parametrize("name", ["model.bin", "model.safetensors"])
def test_a_failed_write_names_the_file_and_the_disk(tmp_path, name):
    import subprocess
    import sys

    path = str(tmp_path / name)
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, path], capture_output=True, text=True, check=True)
    assert proc.stdout.startswith(f"{path}: could not write the checkpoint (")
    assert "is the disk full" in proc.stdout
    assert os.listdir(tmp_path) == []  # no temporary, no checksum, no partial file


def test_unreadable_safetensors_errors_name_the_file(tmp_path):
    from tencentpretrain.convert.stream import iter_tensors, list_keys

    path = str(tmp_path / "model.safetensors")
    save_file({"a": torch.ones(4)}, path)
    os.remove(path + ".sha256")
    with open(path, "r+b") as f:
        f.truncate(20)
    for read in (load_state_dict, list_keys, lambda p: list(iter_tensors(p))):
        with pytest.raises(CheckpointError, match="model.safetensors"):
            read(path)
