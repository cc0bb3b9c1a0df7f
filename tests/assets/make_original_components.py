"""Record the original TencentPretrain's component outputs for fixed weights and inputs, for
tests/core/test_original_components.py (which cannot read the original's code).

Run once from a checkout of the original, with a Python that has torch and safetensors (the original's
package must be the ``tencentpretrain`` imported, so its checkout comes first on sys.path):

    cd /path/to/TencentPretrain && python /path/to/this/repo/tests/assets/make_original_components.py \
        /path/to/this/repo/tests/assets/original_components/components.safetensors

Every tensor goes into one safetensors file (no pickles): ``{case}.state.{key}`` are the module's weights
(its state_dict keys), ``{case}.in.{name}`` the inputs and ``{case}.out.{name}`` the outputs.
"""

from __future__ import annotations

import math
import os
import sys
from argparse import Namespace

import torch
from safetensors.torch import save_file

B, T, EMB, HIDDEN, VOCAB = 2, 6, 6, 8, 11


def _args(**changes) -> Namespace:
    base = {"emb_size": EMB, "hidden_size": HIDDEN, "layers_num": 2, "dropout": 0.0, "bidirectional": False,
            "kernel_size": 3, "block_size": 2, "max_seq_length": 16, "embedding": ["word", "sinusoidalpos"]}
    base.update(changes)
    return Namespace(**base)


def _randomize(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


def record_encoders(out: dict[str, torch.Tensor]) -> None:
    from tencentpretrain.encoders.cnn_encoder import GatedcnnEncoder
    from tencentpretrain.encoders.rnn_encoder import (
        BigruEncoder,
        BilstmEncoder,
        BirnnEncoder,
        GruEncoder,
        LstmEncoder,
        RnnEncoder,
    )

    cases = {"rnn": (RnnEncoder, {}), "lstm": (LstmEncoder, {}), "gru": (GruEncoder, {}),
             "lstm_bidirectional": (LstmEncoder, {"bidirectional": True}),
             "gru_bidirectional": (GruEncoder, {"bidirectional": True}),
             "birnn": (BirnnEncoder, {}), "bilstm": (BilstmEncoder, {}), "bigru": (BigruEncoder, {}),
             "gatedcnn": (GatedcnnEncoder, {"layers_num": 5}), "gatedcnn_one_layer": (GatedcnnEncoder, {"layers_num": 1})}
    for name, (cls, changes) in cases.items():
        torch.manual_seed(len(name))
        module = cls(_args(**changes)).eval()
        _randomize(module)
        emb = torch.randn(B, T, EMB)
        seg = torch.tensor([[1] * T, [1] * (T - 2) + [0, 0]])
        with torch.no_grad():
            hidden = module(emb, seg)
        out.update({f"{name}.state.{k}": v.contiguous() for k, v in module.state_dict().items()})
        out.update({f"{name}.in.emb": emb, f"{name}.in.seg": seg, f"{name}.out.hidden": hidden})


def record_sinusoidal(out: dict[str, torch.Tensor]) -> None:
    from tencentpretrain.embeddings.sinusoidalpos_embedding import SinusoidalposEmbedding

    for width in (EMB, 10):  # (an odd width fails in the original: its sin columns outnumber the slots)
        tokenizer = Namespace(vocab={"[PAD]": 0})
        module = SinusoidalposEmbedding(_args(emb_size=width, tokenizer=tokenizer), None)
        src = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 0, 0, 0]])
        seg = (src > 0).long()
        out[f"sinusoidal_{width}.in.seg"] = seg
        out[f"sinusoidal_{width}.out.emb"] = module(src, seg)


def record_embedding_stacks(out: dict[str, torch.Tensor]) -> None:
    """The word + sinusoidalpos embedding (word vectors scaled by sqrt(emb_size)) with its layer norm, and the
    dual embedding + encoder of a siamese LSTM (untied streams, word + pos)."""
    from tencentpretrain.embeddings.dual_embedding import DualEmbedding
    from tencentpretrain.embeddings.embedding import Embedding
    from tencentpretrain.encoders.dual_encoder import DualEncoder

    from tencentpretrain.embeddings import str2embedding

    torch.manual_seed(7)
    args = _args(remove_embedding_layernorm=False, tokenizer=Namespace(vocab={"[PAD]": 0}))
    stack = Embedding(args)
    for name in args.embedding:
        stack.update(str2embedding[name](args, VOCAB), name)
    _randomize(stack)
    src = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 0, 0, 0]])
    seg = (src > 0).long()
    with torch.no_grad():
        emb = stack(src, seg)
    out.update({f"word_sinusoidal.state.{k}": v.contiguous() for k, v in stack.state_dict().items()})
    out.update({"word_sinusoidal.in.src": src, "word_sinusoidal.in.seg": seg, "word_sinusoidal.out.emb": emb})

    stream = {"embedding": ["word", "pos"], "encoder": "lstm"}
    args = _args(embedding=["dual"], encoder="dual", stream_0=stream, stream_1=stream, tie_weights=False,
                 remove_embedding_layernorm=False)
    embedding, encoder = DualEmbedding(args, VOCAB).eval(), DualEncoder(args).eval()
    _randomize(embedding)
    _randomize(encoder)
    src_1 = torch.tensor([[4, 3, 2, 1, 9], [8, 7, 0, 0, 0]])
    seg_1 = (src_1 > 0).long()
    with torch.no_grad():
        hidden = encoder(embedding((src, src_1), (seg, seg_1)), (seg, seg_1))
    out.update({f"dual.state.embedding.{k}": v.contiguous() for k, v in embedding.state_dict().items()})
    out.update({f"dual.state.encoder.{k}": v.contiguous() for k, v in encoder.state_dict().items()})
    out.update({"dual.in.src_0": src, "dual.in.seg_0": seg, "dual.in.src_1": src_1, "dual.in.seg_1": seg_1,
                "dual.out.hidden_0": hidden[0], "dual.out.hidden_1": hidden[1]})


def record_alibi_attention(out: dict[str, torch.Tensor]) -> None:
    """The original's attention with its ALiBi tensor and layer-number scaling (the path its encoder never
    reached), on a left-padded causal batch."""
    from tencentpretrain.layers.multi_headed_attn import MultiHeadedAttention
    from tencentpretrain.utils.alibi import build_alibi_tensor

    heads, layer_number = 6, 3  # 6 heads: not a power of two, so the extra slopes are used
    torch.manual_seed(3)
    attention = MultiHeadedAttention(12, heads, 2, heads, 0.0, layer_number=layer_number).eval()
    _randomize(attention)
    hidden = torch.randn(B, T, 12)
    real = torch.tensor([[1] * T, [0, 0] + [1] * (T - 2)])  # the second row is left-padded
    visible = torch.tril(torch.ones(T, T))[None, None] * real[:, None, None, :]
    mask = (1.0 - visible) * -10000.0
    alibi = build_alibi_tensor(real, heads, torch.float32, hidden.device)
    with torch.no_grad():
        result, _ = attention(hidden, hidden, hidden, mask, alibi=alibi)
    out.update({f"alibi_attention.state.{k}": v.contiguous() for k, v in attention.state_dict().items()})
    out.update({"alibi_attention.in.hidden": hidden, "alibi_attention.in.real": real,
                "alibi_attention.out.alibi": alibi.reshape(B, heads, T), "alibi_attention.out.hidden": result})


def record_targets(out: dict[str, torch.Tensor]) -> None:
    from tencentpretrain.targets.bilm_target import BilmTarget
    from tencentpretrain.targets.clr_target import ClrTarget

    torch.manual_seed(5)
    streams = {"stream_0": {"pooling": "mean", "hidden_size": HIDDEN}, "stream_1": {"pooling": "first", "hidden_size": HIDDEN}}
    clr = ClrTarget(_args(batch_size=3, projection=True, feature_size=4, **streams), VOCAB)
    _randomize(clr)
    with torch.no_grad():
        clr.logit_scale.fill_(math.log(1 / 0.07))
    hidden = (torch.randn(3, T, HIDDEN), torch.randn(3, T - 1, HIDDEN))
    seg = (torch.tensor([[1] * T, [1] * 3 + [0] * 3, [1] * 2 + [0] * 4]), torch.ones(3, T - 1, dtype=torch.long))
    loss, correct = clr(hidden, None, seg)
    out.update({f"clr.state.{k}": v.contiguous() for k, v in clr.state_dict().items()})
    out.update({"clr.in.hidden_0": hidden[0], "clr.in.hidden_1": hidden[1], "clr.in.seg_0": seg[0],
                "clr.in.seg_1": seg[1], "clr.out.loss": loss.detach(), "clr.out.correct": correct})

    bilm = BilmTarget(_args(label_smoothing=None, prefix_lm_loss=False, has_lmtarget_bias=False), VOCAB)
    _randomize(bilm)
    memory = torch.randn(B, T, HIDDEN)
    tgt_forward, tgt_backward = torch.randint(0, VOCAB, (B, T)), torch.randint(0, VOCAB, (B, T))
    seg = torch.tensor([[1] * T, [1] * 4 + [0, 0]])
    # BilmTarget.forward of this checkout calls LmTarget.lm without the ``seg`` that lm now takes (and expects
    # three results from it); its two calls, as it means them, with seg passed:
    half = bilm.hidden_size
    loss_f = bilm.lm(memory[:, :, :half], tgt_forward, seg)
    loss_b = bilm.lm(memory[:, :, half:], tgt_backward, seg)
    out.update({f"bilm.state.{k}": v.contiguous() for k, v in bilm.state_dict().items()})
    out.update({"bilm.in.hidden": memory, "bilm.in.tgt_forward": tgt_forward, "bilm.in.tgt_backward": tgt_backward,
                "bilm.in.seg": seg, "bilm.out.loss_forward": loss_f.detach(), "bilm.out.loss_backward": loss_b.detach()})


def main(path: str) -> None:
    out: dict[str, torch.Tensor] = {}
    record_encoders(out)
    record_sinusoidal(out)
    record_embedding_stacks(out)
    record_alibi_attention(out)
    record_targets(out)
    save_file({k: v.contiguous().clone() for k, v in out.items()}, path)
    print(f"{len(out)} tensors -> {path}")


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())  # the original's checkout, not this repository's package
    main(sys.argv[1])
