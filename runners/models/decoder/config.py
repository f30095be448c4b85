"""Read the official ``cosyvoice.yaml`` of the token-to-wave decoder as data.

The official file is written for hyperpyyaml: its tags (``!new:pkg.Class``,
``!name:``, ``!apply:``, ``!ref <key>``) name upstream classes that this
project does not ship. We never execute a tag. A YAML loader turns every tagged
node into a :class:`Tagged` record, ``!ref`` strings are resolved against the
rest of the document, and the numbers are checked and copied into typed
dataclasses that our own modules are built from.

Omitted constructor arguments take the upstream constructors' defaults, as
hyperpyyaml would. Anything we cannot map onto our engine (an unknown flow
class, a missing section, text where a number belongs) raises
:class:`DecoderConfigError` naming the key.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = "cosyvoice.yaml"


class DecoderConfigError(ValueError):
    """The decoder yaml is missing, malformed, or describes a model we do not implement."""


@dataclass(frozen=True)
class Tagged:
    """A hyperpyyaml-tagged node kept as data: ``kind`` is new/name/apply, ``target`` the dotted name."""

    kind: str
    target: str
    value: Any

    @property
    def class_name(self) -> str:
        return self.target.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class _Ref:
    """An unresolved ``!ref`` expression such as ``<sample_rate>`` or ``<a> * <b>``."""

    expr: str


# ---------------------------------------------------------------- yaml reading


class _TagLoader(yaml.SafeLoader):
    """SafeLoader that records hyperpyyaml tags instead of acting on them."""


def _construct_tagged(kind: str) -> Callable[[yaml.SafeLoader, str, yaml.Node], Tagged]:
    def construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Tagged:
        if isinstance(node, yaml.MappingNode):
            value: Any = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_scalar(node)
        return Tagged(kind, suffix, value)

    return construct


def _construct_ref(loader: yaml.SafeLoader, node: yaml.Node) -> _Ref:
    if not isinstance(node, yaml.ScalarNode):
        raise DecoderConfigError(f"!ref must be a scalar like '<key>', got {node.id} at line {node.start_mark.line + 1}")
    return _Ref(str(loader.construct_scalar(node)))


for _kind in ("new", "name", "apply"):
    _TagLoader.add_multi_constructor(f"!{_kind}:", _construct_tagged(_kind))
_TagLoader.add_constructor("!ref", _construct_ref)
_TagLoader.add_constructor("!copy", _construct_ref)  # a copy reads the same numbers as a reference


def _unknown_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    raise DecoderConfigError(f"unsupported yaml tag !{suffix} at line {node.start_mark.line + 1}")


_TagLoader.add_multi_constructor("!", _unknown_tag)

_REF_NAME = re.compile(r"<([^<>]+)>")
_BIN_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def _lookup(doc: Mapping[str, Any], path: str) -> Any:
    """``a.b`` or ``a[b][c]`` inside the document (hyperpyyaml's reference syntax)."""
    parts = [p for p in re.split(r"[.\[\]]", path.strip()) if p]
    node: Any = doc
    for part in parts:
        if isinstance(node, Tagged):
            node = node.value
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise DecoderConfigError(f"!ref <{path}> points at nothing in the yaml")
    return node


def _eval_arith(expr: str) -> Any:
    """Evaluate a numeric expression made of literals and + - * / // % ** only."""

    def ev(n: ast.AST) -> Any:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in _BIN_OPS:
            return _BIN_OPS[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        raise DecoderConfigError(f"!ref expression {expr!r} is not plain arithmetic")

    try:
        return ev(ast.parse(expr, mode="eval"))
    except SyntaxError as exc:
        raise DecoderConfigError(f"!ref expression {expr!r} does not parse") from exc


def _resolve(node: Any, doc: Mapping[str, Any], stack: tuple[str, ...] = ()) -> Any:
    """Replace every ``!ref`` in ``node`` by the value it names (recursively, cycle-checked)."""
    if isinstance(node, _Ref):
        expr = node.expr.strip()
        whole = _REF_NAME.fullmatch(expr)
        if whole:
            name = whole.group(1)
            if name in stack:
                raise DecoderConfigError(f"!ref cycle through <{name}>")
            return _resolve(_lookup(doc, name), doc, stack + (name,))
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in stack:
                raise DecoderConfigError(f"!ref cycle through <{name}>")
            value = _resolve(_lookup(doc, name), doc, stack + (name,))
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DecoderConfigError(f"!ref <{name}> inside {expr!r} is not a number")
            return repr(value)

        if not _REF_NAME.search(expr):
            raise DecoderConfigError(f"!ref {expr!r} names no key (expected '<key>')")
        return _eval_arith(_REF_NAME.sub(sub, expr))
    if isinstance(node, Tagged):
        return Tagged(node.kind, node.target, _resolve(node.value, doc, stack))
    if isinstance(node, dict):
        return {k: _resolve(v, doc, stack) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, doc, stack) for v in node]
    return node


def read_tagged_yaml(text: str) -> dict[str, Any]:
    """Parse hyperpyyaml text into plain data plus :class:`Tagged` nodes, with ``!ref`` resolved."""
    try:
        doc = yaml.load(text, Loader=_TagLoader)  # noqa: S506 - a SafeLoader subclass; tags only become data
    except DecoderConfigError:
        raise
    except yaml.YAMLError as exc:
        raise DecoderConfigError(f"not valid yaml: {exc}") from exc
    if not isinstance(doc, dict):
        raise DecoderConfigError("the decoder yaml must be a mapping at the top level")
    return _resolve(doc, doc)


def strip_tags(node: Any) -> Any:
    """Tagged nodes → their plain contents (dicts/lists/scalars), for sections passed on as numbers."""
    if isinstance(node, Tagged):
        return strip_tags(node.value)
    if isinstance(node, dict):
        return {k: strip_tags(v) for k, v in node.items()}
    if isinstance(node, list):
        return [strip_tags(v) for v in node]
    return node


# ---------------------------------------------------------------- typed config


@dataclass(frozen=True)
class EncoderConfig:
    """UpsampleConformerEncoderV2: token-rate conformer, ×stride upsampler, mel-rate conformer."""

    input_size: int
    output_size: int = 256
    pre_lookahead_len: int = 3
    num_blocks: int = 6
    num_up_blocks: int = 4
    up_stride: int = 2
    up_scale_factor: float = 2.0
    attention_heads: int = 4
    linear_units: int = 2048
    key_bias: bool = True
    normalize_before: bool = True
    activation_type: str = "swish"


@dataclass(frozen=True)
class DiTConfig:
    """The flow-matching velocity estimator (adaLN-Zero DiT with a causal conv branch)."""

    in_channels: int
    out_channels: int
    mlp_ratio: float = 4.0
    depth: int = 28
    num_heads: int = 8
    head_dim: int = 64
    hidden_size: int = 256


@dataclass(frozen=True)
class FlowConfig:
    """Everything needed to build the token → mel flow with the official parameter names."""

    input_size: int
    output_size: int
    spk_embed_dim: int
    vocab_size: int
    embedding_vocab_size: int
    embedding_input_size: int
    encoder: EncoderConfig
    estimator: DiTConfig
    inference_cfg_rate: float = 0.7
    output_type: str = "mel"


@dataclass(frozen=True)
class MelConfig:
    """Matcha-style mel settings of the prompt features (``mel_conf``)."""

    num_mels: int = 80
    n_fft: int = 1920
    hop_size: int = 480
    win_size: int = 1920
    sampling_rate: int = 24000
    fmin: float = 0.0
    fmax: float | None = 8000.0


@dataclass(frozen=True)
class DecoderConfig:
    """The whole decoder folder's configuration: flow numbers, raw hift numbers, mel settings."""

    flow: FlowConfig
    hift: dict[str, Any]
    mel: MelConfig
    sample_rate: int
    hift_class: str = "HiFTGenerator"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def samples_per_mel_frame(self) -> int:
        return self.mel.hop_size


# Classes we implement, by their last dotted name (the module path may differ between releases).
FLOW_CLASSES = ("CausalMaskedDiffWithXvec",)
EMBEDDING_CLASSES = ("DualCodebookEmbedding",)
ENCODER_CLASSES = ("UpsampleConformerEncoderV2",)
CFM_CLASSES = ("CausalConditionalCFM",)
ESTIMATOR_CLASSES = ("DiT",)
HIFT_CLASSES = ("HiFTGenerator",)


def _section(node: Any, where: str, classes: tuple[str, ...]) -> dict[str, Any]:
    """The argument mapping of a ``!new:`` node whose class we implement."""
    if node is None:
        raise DecoderConfigError(f"missing section '{where}'")
    if isinstance(node, Tagged):
        if node.kind != "new":
            raise DecoderConfigError(f"'{where}' must be a !new: object, got !{node.kind}:{node.target}")
        if node.class_name not in classes:
            raise DecoderConfigError(
                f"'{where}' is {node.target}, which this engine does not implement (expected {' or '.join(classes)})"
            )
        node = node.value
        if node is None:
            node = {}
    if not isinstance(node, dict):
        raise DecoderConfigError(f"'{where}' must be a mapping of constructor arguments")
    return node


def _num(args: Mapping[str, Any], key: str, where: str, default: Any = ..., kind: type = int) -> Any:
    """A numeric argument; ``...`` as default means required. Booleans are rejected where numbers belong."""
    if key not in args or args[key] is None:
        if default is ...:
            raise DecoderConfigError(f"'{where}.{key}' is required but missing")
        return default
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DecoderConfigError(f"'{where}.{key}' must be a number, got {value!r}")
    if kind is int:
        if float(value) != int(value):
            raise DecoderConfigError(f"'{where}.{key}' must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _flag(args: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = args.get(key, default)
    if not isinstance(value, bool):
        raise DecoderConfigError(f"'{where}.{key}' must be true or false, got {value!r}")
    return value


def _choice(args: Mapping[str, Any], key: str, where: str, allowed: tuple[str, ...]) -> str:
    value = args.get(key, allowed[0])
    if value not in allowed:
        raise DecoderConfigError(f"'{where}.{key}' = {value!r} is not supported (only {', '.join(allowed)})")
    return str(value)


def _positive(value: int | float, where: str) -> None:
    if value <= 0:
        raise DecoderConfigError(f"'{where}' must be positive, got {value}")


def _encoder_config(args: Mapping[str, Any]) -> EncoderConfig:
    w = "flow.encoder"
    _choice(args, "input_layer", w, ("linear",))
    _choice(args, "pos_enc_layer_type", w, ("rel_pos_espnet",))
    _choice(args, "selfattention_layer_type", w, ("rel_selfattn",))
    cfg = EncoderConfig(
        input_size=_num(args, "input_size", w),
        output_size=_num(args, "output_size", w, 256),
        pre_lookahead_len=_num(args, "pre_lookahead_len", w, 3),
        num_blocks=_num(args, "num_blocks", w, 6),
        num_up_blocks=_num(args, "num_up_blocks", w, 4),
        up_stride=_num(args, "up_stride", w, 2),
        up_scale_factor=_num(args, "up_scale_factor", w, 2.0, float),
        attention_heads=_num(args, "attention_heads", w, 4),
        linear_units=_num(args, "linear_units", w, 2048),
        key_bias=_flag(args, "key_bias", w, True),
        normalize_before=_flag(args, "normalize_before", w, True),
        activation_type=_choice(args, "activation_type", w, ("swish", "relu", "gelu", "tanh")),
    )
    for name in ("output_size", "pre_lookahead_len", "up_stride", "attention_heads", "linear_units"):
        _positive(getattr(cfg, name), f"{w}.{name}")
    if cfg.output_size % cfg.attention_heads:
        raise DecoderConfigError(f"'{w}.output_size' {cfg.output_size} is not divisible by attention_heads")
    if cfg.input_size != cfg.output_size:
        # the up-sampled stream re-enters an input_size → output_size projection
        raise DecoderConfigError(f"'{w}.input_size' must equal output_size (got {cfg.input_size} vs {cfg.output_size})")
    return cfg


def _estimator_config(args: Mapping[str, Any]) -> DiTConfig:
    w = "flow.decoder.estimator"
    cfg = DiTConfig(
        in_channels=_num(args, "in_channels", w),
        out_channels=_num(args, "out_channels", w),
        mlp_ratio=_num(args, "mlp_ratio", w, 4.0, float),
        depth=_num(args, "depth", w, 28),
        num_heads=_num(args, "num_heads", w, 8),
        head_dim=_num(args, "head_dim", w, 64),
        hidden_size=_num(args, "hidden_size", w, 256),
    )
    for name in ("in_channels", "out_channels", "mlp_ratio", "num_heads", "head_dim", "hidden_size"):
        _positive(getattr(cfg, name), f"{w}.{name}")
    return cfg


def _flow_config(node: Any) -> FlowConfig:
    args = _section(node, "flow", FLOW_CLASSES)
    w = "flow"
    input_size = _num(args, "input_size", w, 512)
    output_size = _num(args, "output_size", w, 80)
    spk_embed_dim = _num(args, "spk_embed_dim", w, 192)
    vocab_size = _num(args, "vocab_size", w, 5121)
    output_type = args.get("output_type", "mel")
    if output_type != "mel":
        raise DecoderConfigError(f"'flow.output_type' = {output_type!r}; only 'mel' is supported")

    if "input_embedding" not in args:
        raise DecoderConfigError("'flow.input_embedding' is missing; this engine needs the DualCodebookEmbedding")
    emb = _section(args["input_embedding"], "flow.input_embedding", EMBEDDING_CLASSES)
    emb_vocab = _num(emb, "vocab_size", "flow.input_embedding")
    emb_input = _num(emb, "input_size", "flow.input_embedding")
    if emb_input % 2:
        raise DecoderConfigError(f"'flow.input_embedding.input_size' must be even (two codebooks), got {emb_input}")

    encoder = _encoder_config(_section(args.get("encoder"), "flow.encoder", ENCODER_CLASSES))
    if encoder.input_size != emb_input:
        raise DecoderConfigError(
            f"'flow.encoder.input_size' {encoder.input_size} differs from the embedding width {emb_input}"
        )

    dec = _section(args.get("decoder"), "flow.decoder", CFM_CLASSES)
    cfg_rate_src: Mapping[str, Any] = dec
    params = dec.get("cfm_params")
    if "inference_cfg_rate" not in dec and params is not None:
        cfg_rate_src = strip_tags(params) if isinstance(strip_tags(params), dict) else {}
    cfg_rate = _num(cfg_rate_src, "inference_cfg_rate", "flow.decoder", 0.7, float)
    if cfg_rate <= 0:
        raise DecoderConfigError("'flow.decoder.inference_cfg_rate' must be > 0 (guidance is always on)")
    estimator = _estimator_config(_section(dec.get("estimator"), "flow.decoder.estimator", ESTIMATOR_CLASSES))
    if estimator.out_channels != output_size:
        raise DecoderConfigError(
            f"'flow.decoder.estimator.out_channels' {estimator.out_channels} differs from flow.output_size {output_size}"
        )
    if estimator.in_channels != 4 * output_size:
        raise DecoderConfigError(
            f"'flow.decoder.estimator.in_channels' must be 4 × output_size (noise, mu, speaker, prompt) = "
            f"{4 * output_size}, got {estimator.in_channels}"
        )
    return FlowConfig(
        input_size=input_size,
        output_size=output_size,
        spk_embed_dim=spk_embed_dim,
        vocab_size=vocab_size,
        embedding_vocab_size=emb_vocab,
        embedding_input_size=emb_input,
        encoder=encoder,
        estimator=estimator,
        inference_cfg_rate=cfg_rate,
        output_type="mel",
    )


def _mel_config(node: Any) -> MelConfig:
    if node is None:
        return MelConfig()
    args = strip_tags(node)
    if not isinstance(args, dict):
        raise DecoderConfigError("'mel_conf' must be a mapping")
    w = "mel_conf"
    fmax = args.get("fmax", 8000.0)
    return MelConfig(
        num_mels=_num(args, "num_mels", w, 80),
        n_fft=_num(args, "n_fft", w, 1920),
        hop_size=_num(args, "hop_size", w, 480),
        win_size=_num(args, "win_size", w, 1920),
        sampling_rate=_num(args, "sampling_rate", w, 24000),
        fmin=_num(args, "fmin", w, 0.0, float),
        fmax=None if fmax is None else _num(args, "fmax", w, 8000.0, float),
    )


def parse_decoder_config(text: str) -> DecoderConfig:
    """Build a :class:`DecoderConfig` from the yaml text of ``cosyvoice.yaml``."""
    doc = read_tagged_yaml(text)
    for key in ("flow", "hift"):
        if key not in doc:
            raise DecoderConfigError(f"missing section '{key}' in the decoder yaml")
    flow = _flow_config(doc["flow"])
    hift_node = doc["hift"]
    hift_args = _section(hift_node, "hift", HIFT_CLASSES)
    hift = strip_tags(hift_args)
    mel = _mel_config(doc.get("mel_conf"))
    if mel.num_mels != flow.output_size:
        raise DecoderConfigError(f"mel_conf.num_mels {mel.num_mels} differs from flow.output_size {flow.output_size}")
    if "in_channels" in hift and _num(hift, "in_channels", "hift") != flow.output_size:
        raise DecoderConfigError(f"'hift.in_channels' {hift['in_channels']} differs from flow.output_size")
    sample_rate = _num(hift, "sampling_rate", "hift", mel.sampling_rate)
    if sample_rate != mel.sampling_rate:
        raise DecoderConfigError(
            f"'hift.sampling_rate' {sample_rate} differs from mel_conf.sampling_rate {mel.sampling_rate}"
        )
    hift_class = hift_node.class_name if isinstance(hift_node, Tagged) else "HiFTGenerator"
    extra = {k: strip_tags(v) for k, v in doc.items() if k not in ("flow", "hift", "mel_conf")}
    return DecoderConfig(flow=flow, hift=hift, mel=mel, sample_rate=sample_rate, hift_class=hift_class, extra=extra)


def load_decoder_config(path: str | Path) -> DecoderConfig:
    """Read ``cosyvoice.yaml`` (or the folder holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / CONFIG_FILE
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DecoderConfigError(f"decoder config {p} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise DecoderConfigError(f"decoder config {p} is not UTF-8 text") from exc
    try:
        return parse_decoder_config(text)
    except DecoderConfigError as exc:
        raise DecoderConfigError(f"{p}: {exc}") from exc
