"""HuggingFace directory <-> TencentPretrain checkpoint, shard by shard, for every registered family.

One driver for every family of ``tencentpretrain.convert.families`` (keyed by config.json's ``model_type``),
in both directions; the family gives only its config translation and its declarative weight map.

HF -> TencentPretrain: every size comes from the HF ``config.json``; the key set is checked before any tensor
is read; tensors are converted one at a time (safetensors) or one memory-mapped shard at a time (.bin).
TencentPretrain -> HF: a directory that ``transformers`` loads with ``from_pretrained``: config.json,
safetensors shards + index, generation_config.json (generative families) and, given a SentencePiece model,
the tokenizer files (``hf_tokenizer``). A config the family's HF class cannot compute is refused
(``check_exportable``). Directory outputs are written into a staging directory that replaces the output whole.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from tencentpretrain.atomic import staged_directory, write_json
from tencentpretrain.checkpoint import config_path_beside, is_directory_output, iter_state_dict
from tencentpretrain.config import ModelConfig, save_model_config
from tencentpretrain.convert.families import family_of, get_family, read_hf_config, registry
from tencentpretrain.convert.hf_family import HF_CONFIG, HfFamily, HfHead, check_exportable
from tencentpretrain.convert.stream import (
    HF_SAFETENSORS,
    TENCENTPRETRAIN_BLOCKS,
    StateWriter,
    cast,
    expected_shapes,
    iter_tensors,
    list_keys,
    staged_output,
)
from tencentpretrain.convert.weight_map import ImportPlan, WeightMap, check_complete
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.models.capabilities import word_embedding_key
from tencentpretrain.vocab.check import EMBEDDING_KEY, check_vocab_sizes

logger = logging.getLogger(__name__)

BACKBONE_PREFIXES = ("embedding.", "encoder.")  # a fine-tuning model's keys besides its head
HF_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
GENERATION_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")

__all__ = ["HfExportOptions", "convert_hf_to_tencentpretrain", "convert_tencentpretrain_to_hf", "embedding_rows",
           "hf_import_plan", "hf_task_head", "iter_hf_state", "model_shapes", "read_hf_config"]


# ---------------------------------------------------------------------------------------------- HF -> TencentPretrain
def _variant_for(hf: dict, expected: str | None) -> HfFamily | None:
    """A family that reads another's directories (sbert: BertModel's): when named, or (none named) when the
    directory's class is one of its heads."""
    if expected is not None:
        family = get_family(expected)
        return family if family.hf_model_type is not None and family.claims(hf) else None
    return next((f for f in registry().values() if f.hf_model_type and f.claims(hf) and f.head_of(hf)), None)


def _family_for(hf: dict, source: str, expected: str | None) -> HfFamily:
    variant = _variant_for(hf, expected)
    if variant is not None:
        return variant
    family = family_of(hf, source)
    if expected is not None and family.model_type != expected:
        raise ConfigError(f"{source} holds an HF {family.name} model (model_type {family.model_type!r}), not "
                          f"{get_family(expected).name}; use scripts/convert_{family.model_type}_from_huggingface_to_"
                          "tencentpretrain.py (or scripts/convert_from_huggingface_to_tencentpretrain.py)")
    return family


def _head_for(family: HfFamily, hf: dict, source: str, expected: str | None) -> HfHead | None:
    """The task head of an HF config.json dict: the one its ``architectures`` names, which must be ``expected``
    when given (a config.json without ``architectures`` is taken to hold ``expected``)."""
    found = family.head_of(hf)
    if expected is None:
        return found
    wanted = family.head(expected)
    architectures = hf.get("architectures") or []
    if architectures and found is not wanted:
        raise ConfigError(f"{source} holds an HF {architectures[0]} (config.json architectures), not "
                          f"{wanted.architecture}; use the converter of that class")
    return wanted


def _hf_labels(hf: dict) -> int:
    """The label count of an HF config.json dict: ``id2label`` (what save_pretrained writes), or num_labels."""
    return len(hf.get("id2label") or {}) or int(hf.get("num_labels", 2))


def model_shapes(config: ModelConfig, head: HfHead | None = None,
                 vocab_size: int | None = None) -> dict[str, torch.Size]:
    """key -> shape of the TencentPretrain model of ``config``: the pretraining model, or with a task ``head`` the
    fine-tuning model (its embedding and encoder, then the head's layers for ``config.labels_num`` labels)."""
    shapes = expected_shapes(config, vocab_size)
    if head is None:
        return shapes
    backbone = {key: shape for key, shape in shapes.items() if key.startswith(BACKBONE_PREFIXES)}
    return {**backbone, **head.shapes(config.hidden_size, config.labels_num)}


def _weight_map(family: HfFamily, head: HfHead | None, config: ModelConfig, hf: dict) -> WeightMap:
    if head is None:
        return family.weight_map(config, hf)
    return head.weight_map(family.backbone_map(hf))


def hf_import_plan(input_dir: str, family: str | None = None,
                   head: str | None = None) -> tuple[HfFamily, ModelConfig, ImportPlan]:
    """(family, ModelConfig, checked import plan) of an HF directory, from its config.json and key names alone.

    Every key is accounted for (unknown ones raise, listed) and every key the TencentPretrain model needs is
    produced, before any tensor is read. ``family``: the model_type the caller expects (None: any registered).
    ``head``: the task head (HF class name) the caller expects; None takes the one config.json's
    ``architectures`` names, if any (the plan then makes the keys of the fine-tuning model, and the config
    holds the label count). ``input_dir`` may also be one weight file with the config.json beside it.
    """
    fam, _, config, plan = _import_plan(input_dir, family, head)
    return fam, config, plan


def _import_plan(input_dir: str, family: str | None,
                 head: str | None) -> tuple[HfFamily, HfHead | None, ModelConfig, ImportPlan]:
    hf = read_hf_config(_config_dir(input_dir))
    fam = _family_for(hf, input_dir, family)
    hf = fam.full_hf_config(hf, _config_dir(input_dir))
    task_head = _head_for(fam, hf, input_dir, head)
    config = fam.config_from_hf(hf)
    if task_head is not None:
        config = config.replace(labels_num=_hf_labels(hf) if task_head.has_labels else None)
    plan = _weight_map(fam, task_head, config, hf).import_plan(list_keys(input_dir), source=input_dir)
    check_complete(plan.internal_keys(), model_shapes(config, task_head), what=f"{input_dir} -> TencentPretrain")
    return fam, task_head, config, plan


def _config_dir(input_path: str) -> str:
    """Where the config.json of an HF directory, or of one weight file in it, is."""
    return input_path if os.path.isdir(input_path) else os.path.dirname(input_path) or "."


def _has_hf_config(directory: str) -> bool:
    """Whether ``directory`` holds an HF config.json (one with a model_type: not a TencentPretrain JSON config)."""
    path = os.path.join(directory, HF_CONFIG)
    try:
        return os.path.isfile(path) and "model_type" in read_hf_config(directory)
    except ConfigError:
        return False


def hf_model_config(input_path: str, family: str | None = None) -> ModelConfig | None:
    """The TencentPretrain config of the HF model at ``input_path`` (a directory, or one weight file with the
    config.json beside it), from config.json alone; None when there is no HF config.json (a bare state dict)."""
    directory = _config_dir(input_path)
    if not _has_hf_config(directory):
        return None
    hf = read_hf_config(directory)
    fam = _family_for(hf, input_path, family)
    return fam.config_from_hf(fam.full_hf_config(hf, directory))


def hf_task_head(path: str) -> HfHead | None:
    """The task head of the HF directory at ``path`` (None for a pretraining or generative class)."""
    hf = read_hf_config(path)
    return family_of(hf, path).head_of(hf)


def convert_hf_to_tencentpretrain(
    input_dir: str,
    output_path: str,
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 10 * 10**9,
    config_path: str | None = None,
    family: str | None = None,
    head: str | None = None,
    layers_num: int | None = None,
    overwrite: bool = False,
) -> ModelConfig | None:
    """Convert the HF model in ``input_dir`` (any registered family) to a TencentPretrain checkpoint.

    ``output_path`` ending in ``.bin``/``.safetensors`` is one file; anything else is a directory of
    TencentPretrain blocks with an index (written through a staging directory; a non-empty one is refused
    unless ``overwrite``). The JSON config is written to ``config_path`` (default: beside the output, see
    ``config_path_beside``). ``family``: refuse any other model_type. ``head``: the task head (HF class name,
    e.g. ``BertForSequenceClassification``) to expect. ``layers_num``: checked against the input's layers.

    With a task ``head``, ``input_dir`` may be a bare HF state-dict file (what the original converters read):
    with no HF config.json beside it, the keys are checked against ``layers_num`` layers (default: as many as
    present), no JSON config is written and None is returned. Otherwise returns the config.
    """
    if os.path.isfile(input_dir) and not _has_hf_config(_config_dir(input_dir)):
        if config_path is not None:
            raise ConfigError(f"{input_dir} has no HF {HF_CONFIG} beside it, so there is no config to write to "
                              f"{config_path}; give the HF model directory, or leave the config path out")
        _convert_bare_state_file(input_dir, output_path, family, head, layers_num, dtype, max_shard_bytes, overwrite)
        return None
    fam, task_head, config, plan = _import_plan(input_dir, family, head)
    if layers_num is not None and layers_num != config.layers_num:
        raise ConfigError(f"--layers_num {layers_num}, but {input_dir} has {config.layers_num} layers")
    shapes = model_shapes(config, task_head)
    _check_hf_vocab(_config_dir(input_dir), config)
    if not is_directory_output(output_path):
        writer = _write_internal(input_dir, output_path, plan, shapes, dtype, max_shard_bytes)
        save_model_config(config, config_path or config_path_beside(output_path))
    else:
        with staged_directory(output_path, overwrite=overwrite) as staging:
            writer = _write_internal(input_dir, staging, plan, shapes, dtype, max_shard_bytes)
            if config_path is None:  # beside a directory = inside it: staged with the weights
                save_model_config(config, config_path_beside(staging))
        if config_path is not None:
            save_model_config(config, config_path)
    logger.info("wrote %s from HF %s (%d tensors, %.1f MB)", output_path, fam.name, len(writer.keys),
                writer.total_bytes / 1e6)
    return config


def _convert_bare_state_file(path: str, output_path: str, family: str | None, head: str | None,
                             layers_num: int | None, dtype: torch.dtype | None, max_shard_bytes: int,
                             overwrite: bool) -> None:
    """A bare HF state dict of a task head (no config.json): keys checked, no JSON config written."""
    if family is None or head is None:
        raise ConfigError(f"{path}: no HF {HF_CONFIG} beside it, so the model's sizes are unknown; put the "
                          f"{HF_CONFIG} that came with the weights in the same directory (or give the directory). "
                          "A bare state dict is read only by the task-head converters (convert_bert_text_"
                          "classification_...), which keep the original's --layers_num")
    fam = get_family(family)
    task_head = fam.head(head)
    weight_map = task_head.weight_map(fam.backbone_map({}))
    plan = weight_map.import_plan(list_keys(path), source=path)
    layers = layers_num if layers_num is not None else (plan.layers[-1] + 1 if plan.layers else 0)
    check_complete(plan.internal_keys(), weight_map.internal_keys_for_layers(layers),
                   what=f"{path} -> TencentPretrain ({layers} layers)")
    with staged_output(output_path, overwrite=overwrite) as target:
        writer = _write_internal(path, target, plan, None, dtype, max_shard_bytes)
    logger.warning("%s has no %s beside it: no TencentPretrain config was written; fine-tune with the config of "
                   "the pretrained model (--config_path), as with the original", path, HF_CONFIG)
    logger.info("wrote %s from a bare HF %s state dict (%d tensors)", output_path, task_head.architecture,
                len(writer.keys))


def _write_internal(input_dir: str, output_path: str, plan: ImportPlan, shapes: dict[str, torch.Size] | None,
                    dtype: torch.dtype | None, max_shard_bytes: int) -> StateWriter:
    """Convert and write; ``shapes`` (None: unknown, a bare state dict) checks every tensor."""
    writer = StateWriter(output_path, sharded=is_directory_output(output_path), layout=TENCENTPRETRAIN_BLOCKS,
                         max_shard_bytes=max_shard_bytes, key_order=list(shapes or ()))
    for file, key, tensor in iter_tensors(input_dir):
        for internal, converted in plan.convert(key, tensor).items():
            converted = cast(converted, dtype)
            if shapes is not None:
                _check_shape(internal, converted, shapes, file)
            writer.add(internal, converted)
        del tensor
    writer.close()
    return writer


def iter_hf_state(path: str, config: ModelConfig | None = None) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """Yield (file, state_dict with TencentPretrain keys) per shard of the HF directory at ``path``.

    ``config`` (the run's) must describe the same architecture as the directory's config.json where the weight
    map depends on it (head counts); None takes the directory's own. A directory of a task head (config.json's
    ``architectures``: ``BertForSequenceClassification``...) gives the keys of the fine-tuning model.
    """
    hf = read_hf_config(path)
    fam = family_of(hf, path)
    weight_map = _weight_map(fam, fam.head_of(hf), config or fam.config_from_hf(hf), hf)
    plan = weight_map.import_plan(list_keys(path), source=path)
    for file, shard in iter_state_dict(path):
        out: dict[str, torch.Tensor] = {}
        for key in list(shard):
            out.update(plan.convert(key, shard.pop(key)))
        yield file, out


def _check_shape(key: str, tensor: torch.Tensor, shapes: dict[str, torch.Size], source: str) -> None:
    if tuple(tensor.shape) != tuple(shapes[key]):
        raise CheckpointError(f"{source}: {key} has shape {tuple(tensor.shape)}, the config implies "
                              f"{tuple(shapes[key])}")


def _check_hf_vocab(input_dir: str, config: ModelConfig) -> None:
    """HF config vocab_size against the tokenizer.model shipped in the directory, when there is one.

    HF checkpoints often add tokens outside tokenizer.model (a [PAD] row), so a smaller tokenizer is allowed.
    The embedding rows themselves are checked against the config through the expected shapes.
    """
    spm = os.path.join(input_dir, "tokenizer.model")
    if os.path.isfile(spm) and config.vocab_size:
        from tencentpretrain.convert.hf_tokenizer import load_sentencepiece

        pieces = load_sentencepiece(spm).get_piece_size()
        check_vocab_sizes(tokenizer=pieces, embedding=config.vocab_size, config=config.vocab_size,
                          source=input_dir, allow_padding=True)


# ---------------------------------------------------------------------------------------------- TencentPretrain -> HF
@dataclass(frozen=True)
class HfExportOptions:
    """What goes into an exported HF directory besides the weights."""

    spm_model_path: str | None = None  # tokenizer.model to ship (None: no tokenizer files)
    chat_template: str | None = None  # Jinja chat template for tokenizer_config.json
    dtype: torch.dtype | None = None  # None keeps the checkpoint's dtype
    max_shard_bytes: int = 5 * 10**9
    allow_vocab_padding: bool = False  # accept a tokenizer smaller than the embedding
    family: str = "llama"  # the HF model_type to write
    head: str | None = None  # the HF class of a fine-tuned task head ("BertForSequenceClassification"...)
    overwrite: bool = False  # replace a non-empty output directory whole


def convert_tencentpretrain_to_hf(
    input_path: str, output_dir: str, config: ModelConfig, options: HfExportOptions = HfExportOptions()
) -> None:
    """Write ``output_dir`` so that the HF class of ``options.family`` loads it with ``from_pretrained``.

    Everything is checked before anything is written: the vocabulary sizes, the key set and shapes, and that the
    family's HF class computes what ``config`` computes. The directory is staged and replaces ``output_dir``
    whole; a non-empty ``output_dir`` is refused unless ``options.overwrite``.
    """
    family = get_family(options.family)
    head_name = options.head or family.default_head
    head = family.head(head_name) if head_name else None
    keys = list_keys(input_path)
    word_key = word_embedding_key(config)
    has_word = word_key is not None and word_key in keys
    rows = embedding_rows(input_path, keys, word_key) if has_word else config.vocab_size
    sp = _tokenizer_for(options.spm_model_path)
    if has_word:
        check_vocab_sizes(tokenizer=sp.get_piece_size() if sp else None, embedding=rows, config=config.vocab_size,
                          source=input_path, allow_padding=options.allow_vocab_padding)
    if head is not None:
        head.check_exportable(config)
        config = config.replace(labels_num=_checkpoint_labels(input_path, keys, head, config))
    shapes = model_shapes(config, head, rows)
    check_complete(keys, shapes, what=f"{input_path} (for the config given)")
    hf = check_exportable(family, config, rows, backbone_only=head is not None)
    if head is not None:
        hf = _head_hf_config(hf, head, config.labels_num)
    plan = _weight_map(family, head, config, hf).export_plan(keys, source=input_path, drop_ties=True)
    with staged_directory(output_dir, overwrite=options.overwrite) as staging:
        writer = StateWriter(staging, sharded=True, layout=HF_SAFETENSORS, max_shard_bytes=options.max_shard_bytes)
        dtype_seen = None
        for file, key, tensor in iter_tensors(input_path):
            _check_shape(key, tensor, shapes, file)
            for name, converted in plan.convert(key, tensor).items():
                converted = cast(converted, options.dtype)
                dtype_seen = dtype_seen or (converted.dtype if converted.is_floating_point() else None)
                writer.add(name, converted)
            del tensor
        plan.finish()
        for name, fixed in (family.fixed_tensors(config) if family.fixed_tensors else {}).items():
            writer.add(name, cast(fixed, options.dtype or dtype_seen))
        writer.close()
        _write_hf_metadata(staging, family, hf, config, options, dtype_seen)
    logger.info("wrote HF %s model to %s", head.architecture if head else family.name, output_dir)


def _checkpoint_labels(path: str, keys: dict[str, str], head: HfHead, config: ModelConfig) -> int | None:
    """The label count of a fine-tuned checkpoint: the rows of its head's output layer (the fine-tuning scripts
    take it from the training data, so the JSON config need not hold it); None for a fixed-width head."""
    if head.labels_key is None:
        return None
    if head.labels_key not in keys:
        others = sorted(k for k in keys if not k.startswith(BACKBONE_PREFIXES))
        raise CheckpointError(f"{path}: no {head.labels_key}: not a fine-tuned model of {head.architecture}'s task "
                              f"(keys besides the encoder: {', '.join(others[:10]) or 'none'})")
    labels = embedding_rows(path, keys, head.labels_key)
    if config.labels_num not in (None, labels):
        logger.warning("%s: the config says labels_num %d, the checkpoint's %s has %d rows; exporting %d labels",
                       path, config.labels_num, head.labels_key, labels, labels)
    return labels


def _head_hf_config(hf: dict, head: HfHead, labels_num: int | None) -> dict:
    """The config.json of a task head: its class, and its label names (``num_labels`` is their count)."""
    if not head.layers:  # a pooling model (sbert's BertModel): no labels
        return {**hf, "architectures": [head.architecture]}
    labels = head.outputs(labels_num)
    return {**hf, "architectures": [head.architecture],
            "id2label": {str(i): f"LABEL_{i}" for i in range(labels)},
            "label2id": {f"LABEL_{i}": i for i in range(labels)}}


def embedding_rows(path: str, keys: dict[str, str], key: str = EMBEDDING_KEY) -> int:
    """Rows of the word embedding ``key`` (default LLaMA's; ``capabilities.word_embedding_key(config)`` for any
    model) of the checkpoint at ``path`` (read from headers / a memory map)."""
    if key not in keys:
        raise CheckpointError(f"{path}: no {key}: not a TencentPretrain checkpoint of this model")
    file = keys[key]
    if file.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(file, framework="pt") as f:
            return f.get_slice(key).get_shape()[0]
    from tencentpretrain.checkpoint import load_file

    return load_file(file, mmap=True)[key].shape[0]


def _tokenizer_for(spm_model_path: str | None):
    if spm_model_path is None:
        return None
    from tencentpretrain.convert.hf_tokenizer import load_sentencepiece

    return load_sentencepiece(spm_model_path)


def _write_hf_metadata(output_dir: str, family: HfFamily, hf: dict, config: ModelConfig, options: HfExportOptions,
                       dtype: torch.dtype | None) -> None:
    """config.json, generation_config.json (generative families) and, with a tokenizer, the tokenizer files."""
    hf = dict(hf)
    if options.spm_model_path:
        from tencentpretrain.convert.hf_tokenizer import write_hf_tokenizer

        specials = write_hf_tokenizer(options.spm_model_path, output_dir, chat_template=options.chat_template,
                                      model_max_length=config.max_seq_length)
        ids = {"bos_token_id": specials.id("bos"), "eos_token_id": specials.id("eos"),
               "pad_token_id": specials.id("pad")}
        hf.update({k: v for k, v in ids.items() if v is not None})
    elif family.generation_config:
        logger.warning("no --spm_model_path: %s gets no tokenizer files", output_dir)
    if dtype in HF_DTYPE_NAMES:
        hf["torch_dtype"] = HF_DTYPE_NAMES[dtype]  # transformers 4.x reads torch_dtype, 5.x reads either
    write_json(os.path.join(output_dir, "config.json"), hf)
    if family.write_extra_files is not None:
        family.write_extra_files(output_dir, config)
    if family.generation_config:
        # No max_length: generate() would warn about it on every call that passes max_new_tokens; the context
        # length is config.json's max_position_embeddings.
        write_json(os.path.join(output_dir, "generation_config.json"), {k: hf[k] for k in GENERATION_IDS if k in hf})
