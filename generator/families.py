"""Network families described as data (Caffe ``net_spec`` style), and the named presets.

A family turns a handful of numbers (stage counts, widths, kernels) into an ordered list of
:class:`Layer` records; :mod:`openpose_train.generator.render` writes them through the Jinja2
templates. Nothing here knows a model's keypoints: the output channel counts (heatmaps incl.
background, PAF channels) are passed in from the registry by the renderer.

Families
--------
* :class:`DenseFamily`  BODY_25 style (OpenPose's ``pose/body_25`` and openpose_train's BODY_25B / BODY_135 deploy files):
  VGG front end + CPM convs with PReLU, PAF stages (``L2``) then heatmap stages (``L1``), each stage
  ``blocks`` x (three chained 3x3 convs whose outputs are concatenated) + 1x1 ``mid`` + 1x1 output.
  Presets ``body_25``, ``1_25BBkg``, ``1_25BSuperModel11FullVGG`` (dense front end), ``100_135AlmostSameBatchAllGPUs``
  and ``tiny``.
* :class:`TwoBranchFamily`  the CVPR'17 PAF v1 net (COCO, MPI, MPI 4-stage; OpenPose's ``pose/coco``, ``pose/mpi``):
  ReLU everywhere, both branches interleaved per layer, 7x7 refinement stages, L1 = PAF, L2 = heatmaps.
* :class:`SingleBranchFamily`  the CPM hand / face nets (OpenPose's ``hand`` and ``face`` models).

Every :class:`Layer` keeps its learning-rate multipliers and fillers; the BODY_25 deploy file is the
one upstream file written without them (``Preset.deploy_learning_params = False``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

from openpose_train.common.errors import OpenPoseTrainError


class PresetError(OpenPoseTrainError, ValueError):
    """Unknown preset or stage/width controls that cannot describe a network."""


class Token(str):
    """A protobuf enum value: written bare (``pool: MAX``), not quoted."""


class Float32Text(float):
    """A float field written the way Python 2 protobuf printed a float32: 12 significant digits of
    the float32 value (``std: 0.00999999977648``, ``decay_mult: 1.0``)."""


Fields = Tuple[Tuple[str, Any], ...]   # ordered (key, value); a value that is a tuple of pairs is a sub-message


@dataclass(frozen=True)
class Layer:
    """One ``layer { ... }`` block: everything the templates write, in file order."""

    name: str
    type: str
    bottoms: Tuple[str, ...] = ()
    tops: Tuple[str, ...] = ()
    params: Tuple[Tuple[Any, Any], ...] = ()   # ParamSpec (lr_mult, decay_mult) per blob
    fields: Fields = ()                        # loss_weight, <type>_param messages, in order
    top_comment: str = ""                      # raw line written between bottoms and tops (upstream leftovers)
    deploy_only: bool = False                  # the final net_output Concat: not in the training net

    def with_float32_text(self) -> "Layer":
        """Every float field (ParamSpec multipliers included) as :class:`Float32Text`."""
        return replace(self, params=tuple((Float32Text(a), Float32Text(b)) for a, b in self.params),
                       fields=_float32_fields(self.fields))

    def without_learning_params(self) -> "Layer":
        """The BODY_25 deploy form: no ``param`` blocks, fillers or ``prelu_param``."""
        kept = []
        for key, value in self.fields:
            if key == "prelu_param":
                continue
            if key == "convolution_param":
                value = tuple((k, v) for k, v in value if not k.endswith("_filler"))
            kept.append((key, value))
        return replace(self, params=(), fields=tuple(kept))


def _float32_fields(fields):
    out = []
    for key, value in fields:
        if isinstance(value, tuple):
            value = _float32_fields(value)
        elif isinstance(value, float):
            value = Float32Text(value)
        out.append((key, value))
    return tuple(out)


@dataclass(frozen=True)
class StageOutput:
    """A stage's output blob, which the training net compares with a label (one loss each)."""

    top: str
    branch: str      # "paf" or "heat"
    suffix: str      # loss naming: weight_<suffix>, loss_<suffix> (e.g. "stage0_L2")


@dataclass
class Net:
    """A built network: layers in file order plus the stage outputs that carry a loss."""

    layers: List[Layer] = field(default_factory=list)
    stage_outputs: List[StageOutput] = field(default_factory=list)

    def add(self, layer: Layer) -> str:
        self.layers.append(layer)
        return layer.tops[0] if layer.tops else layer.name

    def parameter_shapes(self, input_channels: int = 3) -> Dict[str, List[Tuple[int, ...]]]:
        """Blob shapes per parameterised layer, in layer order: Convolution ``[out, in / group, k, k]``
        (+ ``[out]`` with a bias), PReLU ``[C]``, BatchNorm ``[C], [C], [1]``, Scale ``[C]`` (+ ``[C]``):
        what a caffemodel for this net must hold."""
        channels = {"image": input_channels}
        shapes: Dict[str, List[Tuple[int, ...]]] = {}
        for layer in self.layers:
            cin = [channels[b] for b in layer.bottoms]
            if layer.type == "Convolution":
                conv = dict(dict(layer.fields)["convolution_param"])
                out, k, group = conv["num_output"], conv["kernel_size"], conv.get("group", 1)
                shapes[layer.name] = [(out, cin[0] // group, k, k)] + ([(out,)] if conv.get("bias_term", True) else [])
                cout = out
            elif layer.type == "PReLU":
                shapes[layer.name] = [(cin[0],)]
                cout = cin[0]
            elif layer.type == "BatchNorm":
                shapes[layer.name] = [(cin[0],), (cin[0],), (1,)]
                cout = cin[0]
            elif layer.type == "Scale":
                shapes[layer.name] = [(cin[0],), (cin[0],)]
                cout = cin[0]
            elif layer.type == "Concat":
                cout = sum(cin)
            else:
                cout = cin[0]
            for top in layer.tops:
                channels[top] = cout
        return shapes

    def parameter_count(self, input_channels: int = 3) -> int:
        total = 0
        for blobs in self.parameter_shapes(input_channels).values():
            for shape in blobs:
                n = 1
                for d in shape:
                    n *= d
                total += n
        return total

    # -- layer constructors (Caffe net_spec style) ------------------------------------------
    def conv(self, name, bottom, num_output, kernel, lr, filler="xavier", std=None, dilation=None,
             top=None, top_comment="", stride=1, group=1, bias=True):
        """A "same"-padded convolution (pad = dilation (kernel - 1) / 2). ``group`` = channels makes it
        depthwise; ``bias=False`` (before a BatchNorm) writes ``bias_term: false`` and one param block."""
        conv_fields = [("num_output", num_output)] + ([] if bias else [("bias_term", False)])
        conv_fields += [("pad", (dilation or 1) * (kernel - 1) // 2), ("kernel_size", kernel)]
        conv_fields += ([("group", group)] if group != 1 else []) + ([("stride", stride)] if stride != 1 else [])
        weight_filler = (("type", filler),) + ((("std", std),) if std is not None else ())
        conv_fields.append(("weight_filler", weight_filler))
        if bias:
            conv_fields.append(("bias_filler", (("type", "constant"),)))
        if dilation is not None:
            conv_fields.append(("dilation", dilation))
        return self.add(Layer(name, "Convolution", (bottom,), (top or name,),
                              params=((lr, 1), (lr * 2, 0)) if bias else ((lr, 1),),
                              fields=(("convolution_param", tuple(conv_fields)),),
                              top_comment=top_comment))

    def batch_norm(self, name, blob, lr):
        """Caffe's BatchNorm (in place) then Scale with a bias: the normalisation and its affine part.

        BatchNorm's three blobs (mean, variance, moving-average factor) are statistics, never learned:
        ``lr_mult: 0``, ``decay_mult: 0``, as the layer requires. ``use_global_stats`` is left to Caffe's
        phase default in training files and written ``true`` in deploy files (docs/compatibility.md
        §Light models)."""
        self.add(Layer(f"{name}_bn", "BatchNorm", (blob,), (blob,), params=((0, 0),) * 3))
        return self.add(Layer(f"{name}_scale", "Scale", (blob,), (blob,), params=((lr, 0), (lr, 0)),
                              fields=(("scale_param", (("bias_term", True),)),)))

    def clip(self, name, blob, low=0.0, high=6.0):
        """ReLU6 as Caffe's ``Clip`` layer (min 0, max 6)."""
        return self.add(Layer(name, "Clip", (blob,), (blob,), fields=(("clip_param", (("min", low), ("max", high))),)))

    def eltwise_sum(self, name, bottoms):
        return self.add(Layer(name, "Eltwise", tuple(bottoms), (name,),
                              fields=(("eltwise_param", (("operation", Token("SUM")),)),)))

    def relu(self, name, blob):
        return self.add(Layer(name, "ReLU", (blob,), (blob,)))

    def prelu(self, name, blob, lr):
        return self.add(Layer(name, "PReLU", (blob,), (blob,), params=((lr, 1),),
                              fields=(("prelu_param", (("channel_shared", False),)),)))

    def pool(self, name, bottom):
        return self.add(Layer(name, "Pooling", (bottom,), (name,), fields=(
            ("pooling_param", (("pool", Token("MAX")), ("kernel_size", 2), ("stride", 2))),)))

    def concat(self, name, bottoms, top=None, top_comment="", deploy_only=False):
        return self.add(Layer(name, "Concat", tuple(bottoms), (top or name,),
                              fields=(("concat_param", (("axis", 1),)),),
                              top_comment=top_comment, deploy_only=deploy_only))

    def activation(self, kind, name, blob, lr):
        return self.prelu(name, blob, lr) if kind == "prelu" else self.relu(name, blob)


# ------------------------------------------------------------------------------------------------
# Front ends
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VGGFrontEnd:
    """VGG-19 style convs ``conv{b}_{i}`` with a 2x2 max-pool after each of the first three blocks
    (stride 8), then the CPM convs ``conv{last}_{i}_CPM``.

    ``prelu_from`` names the first VGG conv followed by a PReLU instead of a ReLU (BODY_25's
    ``conv4_2``: the training fork's rule "PReLU when the next token is a CPM conv").
    """

    blocks: Tuple[Tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512))
    cpm: Tuple[Tuple[int, int], ...] = ((256, 3), (128, 3))        # (num_output, kernel) after VGG
    activation: str = "prelu"            # of the CPM convs: "prelu" | "relu"
    prelu_from: Optional[str] = "conv4_2"
    vgg_filler: Tuple[str, Optional[float]] = ("gaussian", 0.01)
    cpm_filler: Tuple[str, Optional[float]] = ("xavier", None)
    lr: Any = 1.0
    pool_name: str = "pool{b}_stage1"
    relu_name: str = "relu{b}_{i}"       # "{conv}_re" for the face net
    dilation: Optional[int] = None       # hand net writes "dilation: 1"

    def build(self, net: Net, bottom: str = "image") -> str:
        blob = bottom
        prelu_started = False
        for b, widths in enumerate(self.blocks, start=1):
            for i, width in enumerate(widths, start=1):
                name = f"conv{b}_{i}"
                blob = net.conv(name, blob, width, 3, self.lr, *self.vgg_filler, dilation=self.dilation)
                prelu_started = prelu_started or name == self.prelu_from
                if prelu_started:
                    net.prelu(f"prelu{b}_{i}", blob, self.lr)
                else:
                    net.relu(self.relu_name.format(b=b, i=i, conv=name), blob)
            if b <= 3:
                blob = net.pool(self.pool_name.format(b=b), blob)
        last = len(self.blocks)
        for i, (width, kernel) in enumerate(self.cpm, start=len(self.blocks[-1]) + 1):
            name = f"conv{last}_{i}_CPM"
            blob = net.conv(name, blob, width, kernel, self.lr, *self.cpm_filler, dilation=self.dilation)
            act = "prelu" if self.activation == "prelu" else "relu"
            net.activation(act, f"{act}{last}_{i}_CPM", blob, self.lr)
        return blob


@dataclass(frozen=True)
class DenseVGGFrontEnd:
    """BODY_25B option 1 ("FullVGG SuperModel"): VGG to conv4_4 (ReLU), dense blocks conv4_5..conv4_10,
    then a 1x1 ``conv4_11_CPM`` on Concat(conv4_2, conv4_4, the middle and the last dense block)."""

    dense_widths: Tuple[int, ...] = (256, 256, 224, 256, 256, 224)
    out: int = 512
    lr: Any = 1.0

    def build(self, net: Net, bottom: str = "image") -> str:
        vgg = VGGFrontEnd(blocks=((64, 64), (128, 128), (256,) * 4, (512,) * 4), cpm=(), prelu_from=None)
        blob = vgg.build(net, bottom)
        concat_names = []
        for j, width in enumerate(self.dense_widths, start=5):
            blob = _dense_block(net, f"conv4_{j}_CPM", f"prelu4_{j}_CPM", blob, width, 3, self.lr, self.lr)
            concat_names.append(blob)
        mid = concat_names[len(concat_names) // 2 - 1]
        cat = net.concat("conv4_11_CPM_concat", ["conv4_2", "conv4_4", mid, blob])
        blob = net.conv("conv4_11_CPM", cat, self.out, 1, self.lr)
        net.prelu("prelu4_11_CPM", blob, self.lr)
        return blob


def _dense_block(net, conv_prefix, prelu_prefix, bottom, width, kernel, lr, prelu_lr):
    """Three chained convs, each with a PReLU, concatenated (3 * width channels)."""
    blob = bottom
    parts = []
    for j in range(3):
        blob = net.conv(f"{conv_prefix}_{j}", blob, width, kernel, lr)
        net.prelu(f"{prelu_prefix}_{j}", blob, prelu_lr)
        parts.append(blob)
    return net.concat(f"{conv_prefix}_concat", parts)


# ------------------------------------------------------------------------------------------------
# BODY_25 family
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DenseStage:
    """One refinement stage: ``blocks`` dense blocks of ``width``, a 1x1 conv of ``mid`` (+PReLU),
    then the 1x1 output conv."""

    blocks: int = 5
    width: int = 128
    mid: int = 512


@dataclass(frozen=True)
class DenseFamily:
    """BODY_25 / BODY_25B / BODY_135 / tiny: PAF stages first, then heatmap stages.

    Stage inputs: PAF stage 0 reads the features; PAF stage k reads [features, PAF k-1];
    heatmap stage 0 reads [features, last PAF]; heatmap stage k reads [features, heat k-1, last PAF].
    """

    front_end: Any = field(default_factory=VGGFrontEnd)
    paf_stages: Tuple[DenseStage, ...] = ()
    heat_stages: Tuple[DenseStage, ...] = ()
    stage_lr: Any = 4.0
    stage_prelu_lr: Any = 4.0

    def build(self, heat_channels: int, paf_channels: int) -> Net:
        if not self.paf_stages or not self.heat_stages:
            raise PresetError("a BODY_25-style network needs at least one PAF stage and one heatmap stage")
        net = Net()
        features = self.front_end.build(net)
        last_paf = None
        for s, stage in enumerate(self.paf_stages):
            bottom = features if s == 0 else net.concat(f"concat_stage{s}_L2", [features, last_paf])
            last_paf = self._stage(net, s, "L2", bottom, stage, paf_channels)
            net.stage_outputs.append(StageOutput(last_paf, "paf", f"stage{s}_L2"))
        last_heat = None
        for s, stage in enumerate(self.heat_stages):
            inputs = [features] + ([last_heat] if last_heat else []) + [last_paf]
            bottom = net.concat(f"concat_stage{s}_L1", inputs)
            last_heat = self._stage(net, s, "L1", bottom, stage, heat_channels)
            net.stage_outputs.append(StageOutput(last_heat, "heat", f"stage{s}_L1"))
        net.concat("net_output", [last_heat, last_paf], deploy_only=True)
        return net

    def _stage(self, net, s, branch, bottom, stage, out_channels):
        blob = bottom
        for c in range(1, stage.blocks + 1):
            blob = _dense_block(net, f"Mconv{c}_stage{s}_{branch}", f"Mprelu{c}_stage{s}_{branch}", blob,
                                stage.width, 3, self.stage_lr, self.stage_prelu_lr)
        c = stage.blocks + 1
        blob = net.conv(f"Mconv{c}_stage{s}_{branch}", blob, stage.mid, 1, self.stage_lr)
        net.prelu(f"Mprelu{c}_stage{s}_{branch}", blob, self.stage_prelu_lr)
        return net.conv(f"Mconv{c + 1}_stage{s}_{branch}", blob, out_channels, 1, self.stage_lr)

    def with_controls(self, paf_stages=None, heat_stages=None, width=None):
        """Change stage counts (repeating the last stage's layout when growing) and/or the dense width."""
        fam = self
        if paf_stages is not None:
            fam = replace(fam, paf_stages=_resize(fam.paf_stages, paf_stages))
        if heat_stages is not None:
            fam = replace(fam, heat_stages=_resize(fam.heat_stages, heat_stages))
        if width is not None:
            fam = replace(fam, paf_stages=tuple(replace(s, width=width) for s in fam.paf_stages),
                          heat_stages=tuple(replace(s, width=width) for s in fam.heat_stages))
        return fam


def _resize(stages, count):
    if count < 1:
        raise PresetError(f"stage count must be >= 1, got {count}")
    return tuple(stages[:count]) + (stages[-1],) * max(0, count - len(stages))


# ------------------------------------------------------------------------------------------------
# Light models: MobileNetV2 front end + slim heads (docs/compatibility.md §Light models)
# ------------------------------------------------------------------------------------------------
# torchvision's MobileNetV2 table: (expansion t, output channels c, repeats n, first stride s).
MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                         (6, 160, 3, 2), (6, 320, 1, 1))


@dataclass(frozen=True)
class InvertedResidualSpec:
    """One MobileNetV2 block as built: ``index`` is its torchvision ``features.<index>``."""

    index: int
    cin: int
    cout: int
    expand: int
    stride: int
    dilation: int

    @property
    def hidden(self) -> int:
        return self.cin * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


@dataclass(frozen=True)
class MobileNetV2FrontEnd:
    """MobileNetV2 (torchvision ``features.0`` ... ``features.<last_block>``) at output stride 8.

    Conv -> BatchNorm -> Scale -> Clip(0, 6) everywhere (ReLU6 as Caffe's Clip layer); inverted residuals
    with an ``Eltwise`` SUM skip where torchvision has one; depthwise 3x3 as ``group`` = channels.
    Where MobileNetV2 strides beyond 8, the block keeps stride 1 and the later depthwise convs dilate
    instead (TF-slim's output_stride rule: the block that loses its stride keeps the old rate).
    Layer names (``conv0``, ``block{i}_expand`` / ``_dw`` / ``_project``) are what
    ``openpose-train mobilenet`` writes for torchvision's weights (training/mobilenet.py).
    """

    last_block: int = 13           # features.13: the last 96-channel block (torchvision's stride-16 end)
    output_stride: int = 8
    stem: int = 32
    lr: Any = 1.0
    filler: str = "msra"

    def blocks(self) -> List[InvertedResidualSpec]:
        out, cin, index, stride, rate = [], self.stem, 1, 2, 1
        for t, c, n, s in MOBILENET_V2_SETTINGS:
            for r in range(n):
                if index > self.last_block:
                    return out
                layer_stride, layer_rate = (s if r == 0 else 1), rate
                if layer_stride > 1 and stride * layer_stride > self.output_stride:
                    rate *= layer_stride
                    layer_stride = 1
                stride *= layer_stride
                out.append(InvertedResidualSpec(index, cin, c, t, layer_stride, layer_rate))
                cin, index = c, index + 1
        return out

    @property
    def out_channels(self) -> int:
        blocks = self.blocks()
        return blocks[-1].cout if blocks else self.stem

    def build(self, net: Net, bottom: str = "image") -> str:
        if not 1 <= self.last_block <= sum(n for _, _, n, _ in MOBILENET_V2_SETTINGS):
            raise PresetError(f"MobileNetV2 has blocks 1..17, got last_block {self.last_block}")
        blob = net.conv("conv0", bottom, self.stem, 3, self.lr, self.filler, stride=2, bias=False)
        net.batch_norm("conv0", blob, self.lr)
        net.clip("conv0_relu6", blob)
        for b in self.blocks():
            block_in = blob
            name = f"block{b.index}"
            if b.expand != 1:
                blob = net.conv(f"{name}_expand", blob, b.hidden, 1, self.lr, self.filler, bias=False)
                net.batch_norm(f"{name}_expand", blob, self.lr)
                net.clip(f"{name}_expand_relu6", blob)
            dilation = b.dilation if b.dilation != 1 else None
            blob = net.conv(f"{name}_dw", blob, b.hidden, 3, self.lr, self.filler, dilation=dilation,
                            stride=b.stride, group=b.hidden, bias=False)
            net.batch_norm(f"{name}_dw", blob, self.lr)
            net.clip(f"{name}_dw_relu6", blob)
            blob = net.conv(f"{name}_project", blob, b.cout, 1, self.lr, self.filler, bias=False)
            net.batch_norm(f"{name}_project", blob, self.lr)
            if b.residual:
                blob = net.eltwise_sum(f"{name}_add", [block_in, blob])
        return blob


@dataclass(frozen=True)
class LightFamily:
    """A light OpenPose net: MobileNetV2 front end, a depthwise-separable CPM, then one initial stage and
    ``refinements`` refinement stages, each predicting heatmaps (``L1``) and PAFs (``L2``) side by side
    (the lightweight-pose layout). Only Convolution (``group``), BatchNorm, Scale, ReLU, Clip, Eltwise
    and Concat: layers the OpenPose fork and OpenPose's runtime Caffe both run.

    * CPM: 1x1 to ``width`` + ReLU, then ``cpm_blocks`` x (depthwise 3x3 + ReLU, 1x1 + ReLU).
    * stage 0: ``stage_blocks`` x (depthwise 3x3, 1x1) on the CPM features; per branch a 1x1 of ``mid``
      + ReLU and the 1x1 output conv.
    * stage s >= 1 reads Concat(CPM features, heatmaps s-1, PAFs s-1): a 1x1 to ``width`` + ReLU, then
      ``stage_blocks`` residual blocks (depthwise 3x3, 1x1, depthwise 3x3 dilated 2, 1x1; Eltwise SUM
      with the block input), then the branch heads as in stage 0.
    """

    front_end: Any = field(default_factory=MobileNetV2FrontEnd)
    refinements: int = 1
    width: int = 128
    mid: int = 128
    cpm_blocks: int = 2
    stage_blocks: int = 2
    stage_lr: Any = 1.0

    def build(self, heat_channels: int, paf_channels: int) -> Net:
        if self.refinements < 0:
            raise PresetError(f"refinement stage count must be >= 0, got {self.refinements}")
        net = Net()
        lr = self.stage_lr
        blob = self.front_end.build(net)
        features = net.conv("cpm_conv", blob, self.width, 1, lr, "msra")
        net.relu("cpm_relu", features)
        for k in range(1, self.cpm_blocks + 1):
            features = self._separable(net, f"cpm_{k}", features, 1)
        branches = [("L1", "heat", heat_channels)] + ([("L2", "paf", paf_channels)] if paf_channels else [])
        outputs = {}
        for s in range(self.refinements + 1):
            final = s == self.refinements
            if s == 0:
                blob = features
                for k in range(1, self.stage_blocks + 1):
                    blob = self._separable(net, f"M{k}_stage0", blob, 1)
            else:
                cat = net.concat(f"concat_stage{s}", [features] + [outputs[br] for br, _, _ in branches])
                blob = net.conv(f"Mconv0_stage{s}", cat, self.width, 1, lr, "msra")
                net.relu(f"Mrelu0_stage{s}", blob)
                for k in range(1, self.stage_blocks + 1):
                    inner = self._separable(net, f"M{k}a_stage{s}", blob, 1)
                    inner = self._separable(net, f"M{k}b_stage{s}", inner, 2)
                    blob = net.eltwise_sum(f"M{k}_stage{s}_add", [blob, inner])
            trunk = blob
            for br, kind, channels in branches:
                hidden = net.conv(f"Mconv1_stage{s}_{br}", trunk, self.mid, 1, lr, "msra")
                net.relu(f"Mrelu1_stage{s}_{br}", hidden)
                single = final and len(branches) == 1
                outputs[br] = net.conv(f"Mconv2_stage{s}_{br}", hidden, channels, 1, lr, "xavier",
                                       top="net_output" if single else None)
                net.stage_outputs.append(StageOutput(outputs[br], kind, f"stage{s}_{br}"))
        if len(branches) == 2:
            net.concat("net_output", [outputs["L1"], outputs["L2"]], deploy_only=True)
        return net

    def _separable(self, net, name, bottom, dilation):
        """Depthwise 3x3 + ReLU, then 1x1 to ``width`` + ReLU."""
        channels = self.width
        blob = net.conv(f"{name}_dw", bottom, channels, 3, self.stage_lr, "msra", group=channels,
                        dilation=dilation if dilation != 1 else None)
        net.relu(f"{name}_dw_relu", blob)
        blob = net.conv(f"{name}_pw", blob, channels, 1, self.stage_lr, "msra")
        net.relu(f"{name}_pw_relu", blob)
        return blob

    def with_controls(self, paf_stages=None, heat_stages=None, width=None):
        """``--paf-stages``/``--heat-stages`` N: N stages in all (both branches share them); ``--width``."""
        fam = self
        stages = paf_stages if paf_stages is not None else heat_stages
        if stages is not None:
            if stages < 1:
                raise PresetError(f"stage count must be >= 1, got {stages}")
            fam = replace(fam, refinements=stages - 1)
        return replace(fam, width=width) if width is not None else fam


# ------------------------------------------------------------------------------------------------
# CVPR'17 two-branch PAF net (COCO / MPI)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TwoBranchFamily:
    """COCO / MPI (OpenPose's ``pose/coco``, ``pose/mpi`` deploy files). Branch L1 = PAFs, L2 = heatmaps, interleaved."""

    stages: int = 6
    width: int = 128
    front_end: Any = field(default_factory=lambda: VGGFrontEnd(activation="relu", prelu_from=None,
                                                               cpm_filler=("gaussian", 0.01)))
    final_top_comment: str = ""      # COCO keeps '  # top: "concat_stage7"'

    def build(self, heat_channels: int, paf_channels: int) -> Net:
        if self.stages < 1:
            raise PresetError(f"stage count must be >= 1, got {self.stages}")
        net = Net()
        features = self.front_end.build(net)
        outs = {"L1": paf_channels, "L2": heat_channels}
        blobs = {"L1": features, "L2": features}
        for i, (width, kernel) in enumerate(((self.width, 3),) * 3 + ((512, 1),), start=1):
            for br in ("L1", "L2"):
                blobs[br] = net.conv(f"conv5_{i}_CPM_{br}", blobs[br], width, kernel, 1.0, "gaussian", 0.01)
                net.relu(f"relu5_{i}_CPM_{br}", blobs[br])
        for br in ("L1", "L2"):
            blobs[br] = net.conv(f"conv5_5_CPM_{br}", blobs[br], outs[br], 1, 1.0, "gaussian", 0.01)
        self._record(net, blobs, 1)
        for t in range(2, self.stages + 1):
            cat = net.concat(f"concat_stage{t}", [blobs["L1"], blobs["L2"], features])
            blobs = {"L1": cat, "L2": cat}
            for i, (width, kernel) in enumerate(((self.width, 7),) * 5 + ((self.width, 1),), start=1):
                for br in ("L1", "L2"):
                    blobs[br] = net.conv(f"Mconv{i}_stage{t}_{br}", blobs[br], width, kernel, 4.0, "gaussian", 0.01)
                    net.relu(f"Mrelu{i}_stage{t}_{br}", blobs[br])
            for br in ("L1", "L2"):
                blobs[br] = net.conv(f"Mconv7_stage{t}_{br}", blobs[br], outs[br], 1, 4.0, "gaussian", 0.01)
            self._record(net, blobs, t)
        # Upstream keeps the name concat_stage7 even for the 4-stage MPI file.
        net.concat("concat_stage7", [blobs["L2"], blobs["L1"]], top="net_output",
                   top_comment=self.final_top_comment, deploy_only=True)
        return net

    @staticmethod
    def _record(net, blobs, t):
        net.stage_outputs.append(StageOutput(blobs["L1"], "paf", f"stage{t}_L1"))
        net.stage_outputs.append(StageOutput(blobs["L2"], "heat", f"stage{t}_L2"))

    def with_controls(self, paf_stages=None, heat_stages=None, width=None):
        return _with_stage_count(self, paf_stages if paf_stages is not None else heat_stages, width)


# ------------------------------------------------------------------------------------------------
# CPM hand / face
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SingleBranchFamily:
    """Hand (22 outputs) and face (71 outputs) CPM nets: one heatmap branch, 6 stages."""

    stages: int = 6
    width: int = 128
    front_end: Any = field(default_factory=VGGFrontEnd)
    stage1_relu_names: Tuple[str, str] = ("relu5_4_stage1_3", "relu6_4_stage1_1")
    stage_relu_name: str = "Mrelu1_{n}_stage{t}_{i}"      # n = i + 1
    concat_name: str = "concat_stage{t}"
    stage1_lr: Any = 1.0
    stage_filler: Tuple[str, Optional[float]] = ("gaussian", 0.01)
    dilation: Optional[int] = None
    final_top_comment: str = '#   top: "Mconv7_stage{t}"'

    def build(self, heat_channels: int, paf_channels: int) -> Net:
        if paf_channels:
            raise PresetError("the hand/face CPM family has no PAF branch (model has PAFs)")
        if self.stages < 2:
            raise PresetError(f"the hand/face CPM family needs >= 2 stages, got {self.stages}")
        net = Net()
        features = self.front_end.build(net)
        conv = dict(filler=self.stage_filler[0], std=self.stage_filler[1], dilation=self.dilation)
        last = len(self.front_end.blocks)
        features = net.conv(f"conv{last}_3_CPM", features, self.width, 3, self.stage1_lr, **conv)
        net.relu(self.stage1_relu_names[0].format(conv=features), features)
        blob = net.conv("conv6_1_CPM", features, 512, 1, self.stage1_lr, **conv)
        net.relu(self.stage1_relu_names[1].format(conv=blob), blob)
        blob = net.conv("conv6_2_CPM", blob, heat_channels, 1, self.stage1_lr, **conv)
        net.stage_outputs.append(StageOutput(blob, "heat", "stage1"))
        for t in range(2, self.stages + 1):
            blob = net.concat(self.concat_name.format(t=t), [blob, features])
            for i, kernel in enumerate((7,) * 5 + (1,), start=1):
                blob = net.conv(f"Mconv{i}_stage{t}", blob, self.width, kernel, 4.0, **conv)
                net.relu(self.stage_relu_name.format(n=i + 1, t=t, i=i, conv=blob), blob)
            final = t == self.stages
            blob = net.conv(f"Mconv7_stage{t}", blob, heat_channels, 1, 4.0, **conv,
                            top="net_output" if final else None,
                            top_comment=self.final_top_comment.format(t=t) if final else "")
            net.stage_outputs.append(StageOutput(blob, "heat", f"stage{t}"))
        return net

    def with_controls(self, paf_stages=None, heat_stages=None, width=None):
        return _with_stage_count(self, heat_stages if heat_stages is not None else paf_stages, width)


def _with_stage_count(family, stages, width):
    """CPM families (both branches share one stage count): new stage count and/or stage width."""
    if stages is not None:
        family = replace(family, stages=stages)
    return replace(family, width=width) if width is not None else family


# ------------------------------------------------------------------------------------------------
# Presets: a family plus how its deploy file is written and its training recipe
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    """One training source as written into ``op_transform_param`` (one entry of each per-source list).

    In a preset's recipe, ``dataset`` names a registry TrainingVariant.dataset key and ``lmdb`` a folder
    name under ``--dataset-dir``; the renderer resolves them into ``op_model`` (the fork's model string,
    from the registry) and a path.
    """

    lmdb: str
    probability: Optional[float]      # None (a --lmdb without one): shares what is left
    op_model: str = ""
    dataset: str = ""
    scale_min: float = 1.0 / 3.0
    scale_max: float = 1.5
    max_rotation: float = 45
    max_occlusions: int = 2
    sigma: float = 7.0


@dataclass(frozen=True)
class Recipe:
    """Training data and solver defaults of a preset (openpose_train's ``d_setLayers.py`` and shipped training files)."""

    datasets: Tuple[DatasetSpec, ...] = ()   # () = the model's first registry variant on lmdb_<dataset>
    background_lmdb: str = "lmdb_background"
    prob_only_background: float = 0.0
    batch_size: int = 10
    crop_size: Tuple[int, int] = (368, 368)
    base_lr: float = 1e-4
    media_directory: Optional[str] = None
    # Adam learning rate of the CPU demo's schedule (openpose_train/demo.py): measured per preset
    demo_base_lr: float = 1e-3


@dataclass(frozen=True)
class InitialWeights:
    """ImageNet weights a preset's front end starts from: the caffemodel ``train_pose.sh`` passes as
    ``-weights`` and the ``openpose-train`` command that converts torchvision's file into it."""

    path: str                 # default -weights of train_pose.sh
    converter: str            # openpose-train subcommand
    torchvision_file: str     # torchvision's ImageNet state dict the converter reads

    def command(self, path: str) -> str:
        return f"openpose-train {self.converter} {self.torchvision_file} {path}"


INITIAL_WEIGHTS = {
    "vgg19": InitialWeights("dataset/vgg/VGG_ILSVRC_19_layers.caffemodel", "vgg", "vgg19-dcbb9e9d.pth"),
    "mobilenet_v2": InitialWeights("dataset/mobilenet/mobilenet_v2.caffemodel", "mobilenet", "mobilenet_v2-b0353104.pth"),
}


@dataclass(frozen=True)
class Preset:
    name: str
    family: Any
    header: str                     # deploy header style (see templates/deploy.prototxt.j2)
    deploy_learning_params: bool = True
    float32_text: bool = False      # floats as Python 2 protobuf printed them (body_25, BODY_135 files)
    prelu_param: bool = True        # write prelu_param { channel_shared: false } (body_25's files omit it)
    recipe: Recipe = field(default_factory=Recipe)
    upstream_folder: str = ""       # openpose_train experimental_models/<folder>/<model dir>
    description: str = ""
    # OpenPose command-line flags from openpose_train's experimental_models/README
    net_resolution: str = "-1x368"
    multiscale_flags: str = ""
    initial_weights: str = "vgg19"   # key of INITIAL_WEIGHTS

    @property
    def init(self) -> InitialWeights:
        return INITIAL_WEIGHTS[self.initial_weights]


LIGHT_PRESET = "mobilenet_v2"
_BODY25_STAGES = (DenseStage(5, 96, 256),) + (DenseStage(5, 128, 512),) * 3
_BODY25_HEAT = (DenseStage(5, 96, 256), DenseStage(5, 128, 512))
_FOOT_COCO = (DatasetSpec("lmdb_coco2017_foot", 0.05, dataset="coco_foot", scale_max=1.1),
              DatasetSpec("lmdb_coco", 0.95, dataset="coco", scale_max=1.1))
_BODY25B_DATA = (DatasetSpec("lmdb_coco2017_foot", 0.05, dataset="coco_foot"),
                 DatasetSpec("lmdb_coco", 0.88, dataset="coco"),
                 DatasetSpec("lmdb_mpii", 0.05, dataset="mpii"))
_BODY25B_DATA_FULLVGG = _BODY25B_DATA[:2] + (replace(_BODY25B_DATA[2], scale_max=2.5),)
# The released BODY_135 run: effective per-dataset values (the fork indexes the over-long scale
# lists by dataset, so entries 10-15 of its strings are never read; docs/labels.md §Sampling).
_BODY135_DATA = (
    DatasetSpec("lmdb_coco2017_foot", 0.05, dataset="coco_foot"),
    DatasetSpec("lmdb_coco", 0.73, dataset="coco"),
    DatasetSpec("lmdb_mpii", 0.05, dataset="mpii", scale_max=2.5),
    DatasetSpec("lmdb_face_frgc", 0.005, dataset="face70", max_occlusions=0),
    DatasetSpec("lmdb_face_multipie", 0.01, dataset="face70", max_occlusions=0),
    DatasetSpec("lmdb_face_mask_out", 0.005, dataset="face70", scale_max=2.5, max_occlusions=0),
    DatasetSpec("lmdb_hand_dome", 0.005, dataset="hand21", max_occlusions=0),
    DatasetSpec("lmdb_hand_mpii", 0.05, dataset="hand42", max_occlusions=0),
    DatasetSpec("lmdb_dome135", 0.075, dataset="dome135", scale_max=2.5, max_occlusions=0),
)

_HAND_FRONT = VGGFrontEnd(blocks=((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512, 512)), cpm=(),
                          prelu_from=None, vgg_filler=("xavier", None), dilation=1, relu_name="relu{b}_{i}")
_FACE_FRONT = VGGFrontEnd(blocks=((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512, 512)), cpm=(),
                          prelu_from=None, lr=1, pool_name="pool{b}", relu_name="{conv}_re")

PRESETS: Dict[str, Preset] = {p.name: p for p in (
    Preset("body_25", DenseFamily(paf_stages=_BODY25_STAGES, heat_stages=_BODY25_HEAT, stage_prelu_lr=1.0),
           header="body_25", deploy_learning_params=False, float32_text=True, prelu_param=False,
           recipe=Recipe(datasets=_FOOT_COCO, base_lr=1e-4),
           upstream_folder="body_25", multiscale_flags="--net_resolution 1312x736 --scale_number 4 --scale_gap 0.25",
           description="OpenPose's BODY_25 (4 PAF + 2 heatmap stages, trained on COCO + foot)"),
    Preset("1_25BBkg", DenseFamily(paf_stages=(DenseStage(5, 64, 256), DenseStage(5, 128, 256))
                                   + (DenseStage(5, 128, 512),) * 3,
                                   heat_stages=(DenseStage(5, 128, 512),)),
           header="plain",
           recipe=Recipe(datasets=_BODY25B_DATA, prob_only_background=0.02, base_lr=1e-4),
           upstream_folder="1_25BBkg", multiscale_flags="--net_resolution 1312x736 --scale_number 4 --scale_gap 0.25",
           description="BODY_25B option 2 (recommended): BODY_25 speed, trained with background-only images"),
    Preset("1_25BSuperModel11FullVGG", DenseFamily(front_end=DenseVGGFrontEnd(),
                                                   paf_stages=(DenseStage(9, 256, 512),),
                                                   heat_stages=(DenseStage(9, 192, 512),)),
           header="plain",
           recipe=Recipe(datasets=_BODY25B_DATA_FULLVGG, prob_only_background=0.02, batch_size=3,
                         crop_size=(480, 480), base_lr=2e-5, media_directory=""),
           upstream_folder="1_25BSuperModel11FullVGG", net_resolution="-1x480",
           multiscale_flags="--net_resolution 1712x960 --scale_number 4 --scale_gap 0.25",
           description="BODY_25B option 1 (maximum accuracy, slower): dense VGG front end, 1+1 deep stages"),
    Preset("100_135AlmostSameBatchAllGPUs", DenseFamily(
        paf_stages=(DenseStage(8, 128, 256), DenseStage(8, 128, 512), DenseStage(8, 128, 512),
                    DenseStage(8, 256, 512)),
        heat_stages=(DenseStage(5, 256, 512),)),
        header="plain",
        float32_text=True,
        recipe=Recipe(datasets=_BODY135_DATA, prob_only_background=0.02, crop_size=(480, 480), base_lr=3e-5,
                      media_directory="dome/hdImgs/"),
        upstream_folder="100_135AlmostSameBatchAllGPUs", net_resolution="-1x480",
        multiscale_flags="--net_resolution 1712x960 --scale_number 4 --scale_gap 0.25",
        description="BODY_135 whole body (body, feet, hands, face in one network)"),
    # tiny trains from scratch (no VGG weights), so its front end uses msra (He) fillers: with the
    # upstream gaussian 0.01 the signal vanishes through the narrow layers (output spread ~5e-7).
    Preset("tiny", DenseFamily(front_end=VGGFrontEnd(blocks=((16,), (32,), (64,), (64, 64)), cpm=((64, 3), (32, 3)),
                                                     vgg_filler=("msra", None), cpm_filler=("msra", None)),
                               paf_stages=(DenseStage(2, 32, 64),), heat_stages=(DenseStage(2, 32, 64),)),
           header="plain",
           recipe=Recipe(batch_size=8, crop_size=(128, 128), base_lr=1e-3),
           description="BODY_25 topology with reduced widths and stages (CPU demo and tests)"),
    # The light model: MobileNetV2 (ImageNet weights via `openpose-train mobilenet`) + slim heads,
    # for any registry or YAML skeleton; export folds its BatchNorm+Scale into the convolutions.
    Preset(LIGHT_PRESET, LightFamily(), header="plain", initial_weights="mobilenet_v2",
           # demo: 1e-3 ended at AP 0.495, 2e-3 at 0.526 (README §Fast models for OpenPose)
           recipe=Recipe(batch_size=10, crop_size=(368, 368), base_lr=1e-4, demo_base_lr=2e-3),
           description="light model: MobileNetV2 front end at stride 8, 1 initial + 1 refinement slim stages "
                       "(about 1/40 of BODY_25's FLOPs; BatchNorm folded at export)"),
    Preset("coco", TwoBranchFamily(stages=6, final_top_comment='  # top: "concat_stage7"'), header="coco",
           description="the CVPR'17 COCO model (6 stages, two branches)"),
    Preset("mpi", TwoBranchFamily(stages=6), header="coco", description="the CVPR'17 MPI model (6 stages)"),
    Preset("mpi_4_stages", TwoBranchFamily(stages=4), header="coco",
           description="the faster MPI model (4 stages)"),
    Preset("hand", SingleBranchFamily(front_end=_HAND_FRONT, dilation=1), header="hand",
           description="OpenPose's hand CPM (6 stages)"),
    Preset("face", SingleBranchFamily(front_end=_FACE_FRONT, stage1_lr=1,
                                      stage1_relu_names=("{conv}_re", "{conv}_re"),
                                      stage_relu_name="{conv}_re", concat_name="features_in_stage_{t}"),
           header="face", description="OpenPose's face CPM (6 stages)"),
)}

# Default preset per registry model; models not listed (YAML skeletons) use the BODY_25B layout.
DEFAULT_PRESETS = {
    "BODY_25": "body_25", "BODY_25B": "1_25BBkg", "BODY_135": "100_135AlmostSameBatchAllGPUs",
    "COCO_18": "coco", "MPI_15": "mpi", "MPI_15_4": "mpi_4_stages", "HAND_21": "hand", "FACE_70": "face",
}
FALLBACK_PRESET = "1_25BBkg"


def get_preset(name: str) -> Preset:
    """Preset by name; unknown names raise :class:`PresetError` listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown preset '{name}'; known presets: {', '.join(PRESETS)}") from None


def default_preset_name(model_name: str) -> str:
    return DEFAULT_PRESETS.get(model_name, FALLBACK_PRESET)
