#!/usr/bin/env python3
"""Writes the workflow nodes' ONNX graphs: small image operations that run through ONNX Runtime (so
on the CUDA provider on a GPU host) like every other model. Each is a plain ONNX graph with dynamic
height and width; the engine feeds ports and parameters and reads ports (see the manifests in
models-manifests/, kind "op").

Tensor conventions (NCHW, batch 1, float32):
    heightmap  [1, 1, H, W]  heights in metres
    image      [1, 3, H, W]  RGB in 0..1
    mask       [1, 1, H, W]  0..1
    parameters [1]           one float each

    image_input.onnx  pixels [1,4,H,W] RGBA 0..1, height_scale → image, heightmap (luminance ·
                      height_scale), mask (alpha)
    upscale.onnx      in [1,C,H,W], factor → out [1,C,H·f,W·f]   bicubic (Resize, cubic, a = -0.75)
    blur.onnx         in [1,C,H,W], radius → out                  separable Gaussian, sigma = radius,
                                                                  edges repeated
    blend.onnx        a, b [1,3,H,W], mask [1,1,H|1,W|1], factor, mode → out
                      mode 0 mix, 1 multiply, 2 screen; out = a + (target − a) · factor · mask
    hillshade.onnx    heightmap, azimuth (deg, clockwise from north), altitude (deg), z_factor → image
                      Horn's gradient, Lambertian shading of the surface normal
    colormap.onnx     heightmap, gamma → image   hypsometric ramp over the map's own height range

Usage: make_workflow_models.py OUT_DIR   (writes the six .onnx files there)
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, checker, helper, numpy_helper

F = TensorProto.FLOAT


def const(name, values, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def model(name, nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    # Opset 17 / IR 8: loadable by every ONNX Runtime from 1.14 on.
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="atelier-make-workflow-models"
    )
    m.ir_version = 8
    checker.check_model(m, full_check=True)
    return m


def tensor(name, channels):
    return helper.make_tensor_value_info(name, F, [1, channels, "H", "W"])


def scalar(name):
    return helper.make_tensor_value_info(name, F, [1])


def image_input():
    lum = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32).reshape(1, 3, 1, 1)
    inits = [
        const("lum", lum),
        const("s0", [0], np.int64),
        const("s3", [3], np.int64),
        const("s4", [4], np.int64),
        const("axis1", [1], np.int64),
    ]
    nodes = [
        helper.make_node("Slice", ["pixels", "s0", "s3", "axis1"], ["image"]),
        helper.make_node("Slice", ["pixels", "s3", "s4", "axis1"], ["mask"]),
        helper.make_node("Conv", ["image", "lum"], ["luminance"]),
        helper.make_node("Mul", ["luminance", "height_scale"], ["heightmap"]),
    ]
    return model(
        "image_input",
        nodes,
        [tensor("pixels", 4), scalar("height_scale")],
        [tensor("image", 3), tensor("heightmap", 1), tensor("mask", 1)],
        inits,
    )


def upscale():
    inits = [const("ones", [1.0, 1.0])]
    nodes = [
        helper.make_node("Concat", ["factor", "factor"], ["ff"], axis=0),
        helper.make_node("Concat", ["ones", "ff"], ["scales"], axis=0),
        helper.make_node(
            "Resize",
            ["in", "", "scales"],
            ["out"],
            mode="cubic",
            cubic_coeff_a=-0.75,
            coordinate_transformation_mode="half_pixel",
        ),
    ]
    return model(
        "upscale",
        nodes,
        [helper.make_tensor_value_info("in", F, [1, "C", "H", "W"]), scalar("factor")],
        [helper.make_tensor_value_info("out", F, [1, "C", "H2", "W2"])],
        inits,
    )


BLUR_REACH = 24  # kernel half-width in pixels: 3 sigma at the largest radius (8)


def blur():
    taps = np.arange(-BLUR_REACH, BLUR_REACH + 1, dtype=np.float32)
    inits = [
        const("taps_sq", (taps * taps).reshape(1, 1, 1, -1)),
        const("minus_half", -0.5),
        const("kshape_v", [1, 1, 2 * BLUR_REACH + 1, 1], np.int64),
        const("minus1_1", [-1, 1], np.int64),
        const("s2", [2], np.int64),
        const("s4", [4], np.int64),
        const("pads_h", [0, 0, 0, BLUR_REACH, 0, 0, 0, BLUR_REACH], np.int64),
        const("pads_v", [0, 0, BLUR_REACH, 0, 0, 0, BLUR_REACH, 0], np.int64),
    ]
    nodes = [
        # k = exp(-x² / (2 r²)) / sum
        helper.make_node("Mul", ["radius", "radius"], ["r2"]),
        helper.make_node("Div", ["taps_sq", "r2"], ["q"]),
        helper.make_node("Mul", ["q", "minus_half"], ["e"]),
        helper.make_node("Exp", ["e"], ["k_raw"]),
        helper.make_node("ReduceSum", ["k_raw"], ["k_sum"], keepdims=1),
        helper.make_node("Div", ["k_raw", "k_sum"], ["k_h"]),
        helper.make_node("Reshape", ["k_h", "kshape_v"], ["k_v"]),
        # channels as batch: [C, 1, H, W], so one kernel serves any channel count
        helper.make_node("Shape", ["in"], ["shape"]),
        helper.make_node("Slice", ["shape", "s2", "s4"], ["hw"]),
        helper.make_node("Concat", ["minus1_1", "hw"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["in", "flat_shape"], ["flat"]),
        helper.make_node("Pad", ["flat", "pads_h"], ["padded_h"], mode="edge"),
        helper.make_node("Conv", ["padded_h", "k_h"], ["blurred_h"]),
        helper.make_node("Pad", ["blurred_h", "pads_v"], ["padded_v"], mode="edge"),
        helper.make_node("Conv", ["padded_v", "k_v"], ["blurred"]),
        helper.make_node("Reshape", ["blurred", "shape"], ["out"]),
    ]
    return model(
        "blur",
        nodes,
        [helper.make_tensor_value_info("in", F, [1, "C", "H", "W"]), scalar("radius")],
        [helper.make_tensor_value_info("out", F, [1, "C", "H", "W"])],
        inits,
    )


def blend():
    inits = [const("one", 1.0), const("zero", 0.0), const("m1", 1.0), const("m2", 2.0)]
    nodes = [
        helper.make_node("Mul", ["a", "b"], ["product"]),
        helper.make_node("Sub", ["one", "a"], ["inv_a"]),
        helper.make_node("Sub", ["one", "b"], ["inv_b"]),
        helper.make_node("Mul", ["inv_a", "inv_b"], ["inv_product"]),
        helper.make_node("Sub", ["one", "inv_product"], ["screen"]),
        helper.make_node("Equal", ["mode", "m1"], ["is_multiply"]),
        helper.make_node("Equal", ["mode", "m2"], ["is_screen"]),
        helper.make_node("Where", ["is_screen", "screen", "b"], ["t1"]),
        helper.make_node("Where", ["is_multiply", "product", "t1"], ["target"]),
        helper.make_node("Mul", ["mask", "factor"], ["weight"]),
        helper.make_node("Sub", ["target", "a"], ["delta"]),
        helper.make_node("Mul", ["delta", "weight"], ["step"]),
        helper.make_node("Add", ["a", "step"], ["mixed"]),
        helper.make_node("Clip", ["mixed", "zero", "one"], ["out"]),
    ]
    return model(
        "blend",
        nodes,
        [
            tensor("a", 3),
            tensor("b", 3),
            helper.make_tensor_value_info("mask", F, [1, 1, "MH", "MW"]),
            scalar("factor"),
            scalar("mode"),
        ],
        [tensor("out", 3)],
        inits,
    )


def hillshade():
    # Horn's method, image axes: x to the right, y downwards; /8 for unit pixel spacing.
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32) / 8.0
    ky = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float32) / 8.0
    inits = [
        const("kx", kx.reshape(1, 1, 3, 3)),
        const("ky", ky.reshape(1, 1, 3, 3)),
        const("pads", [0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        const("deg", np.pi / 180.0),
        const("minus1", -1.0),
        const("one", 1.0),
        const("zero", 0.0),
        const("rgb", [1, 3, 1, 1], np.int64),
    ]
    nodes = [
        helper.make_node("Pad", ["heightmap", "pads"], ["padded"], mode="edge"),
        helper.make_node("Conv", ["padded", "kx"], ["dzdx"]),
        helper.make_node("Conv", ["padded", "ky"], ["dzdy"]),
        # normal = (-z·dzdx, -z·dzdy, 1) / |…|
        helper.make_node("Mul", ["dzdx", "z_factor"], ["gx"]),
        helper.make_node("Mul", ["dzdy", "z_factor"], ["gy"]),
        helper.make_node("Mul", ["gx", "gx"], ["gx2"]),
        helper.make_node("Mul", ["gy", "gy"], ["gy2"]),
        helper.make_node("Add", ["gx2", "gy2"], ["g2"]),
        helper.make_node("Add", ["g2", "one"], ["n2"]),
        helper.make_node("Sqrt", ["n2"], ["norm"]),
        # light = (sin az · cos alt, −cos az · cos alt, sin alt): azimuth clockwise from north (up)
        helper.make_node("Mul", ["azimuth", "deg"], ["az"]),
        helper.make_node("Mul", ["altitude", "deg"], ["alt"]),
        helper.make_node("Sin", ["az"], ["sin_az"]),
        helper.make_node("Cos", ["az"], ["cos_az"]),
        helper.make_node("Sin", ["alt"], ["sin_alt"]),
        helper.make_node("Cos", ["alt"], ["cos_alt"]),
        helper.make_node("Mul", ["sin_az", "cos_alt"], ["lx"]),
        helper.make_node("Mul", ["cos_az", "cos_alt"], ["ly_pos"]),
        helper.make_node("Mul", ["ly_pos", "minus1"], ["ly"]),
        # n·l = (−gx·lx − gy·ly + sin alt) / norm
        helper.make_node("Mul", ["gx", "lx"], ["tx"]),
        helper.make_node("Mul", ["gy", "ly"], ["ty"]),
        helper.make_node("Add", ["tx", "ty"], ["txy"]),
        helper.make_node("Sub", ["sin_alt", "txy"], ["dot"]),
        helper.make_node("Div", ["dot", "norm"], ["lambert"]),
        helper.make_node("Clip", ["lambert", "zero", "one"], ["shade"]),
        helper.make_node("Expand", ["shade", "rgb"], ["image_hw"]),
        helper.make_node("Identity", ["image_hw"], ["image"]),
    ]
    return model(
        "hillshade",
        nodes,
        [tensor("heightmap", 1), scalar("azimuth"), scalar("altitude"), scalar("z_factor")],
        [tensor("image", 3)],
        inits,
    )


# Hypsometric ramp: lowland green → grass → tan → rock brown → snow.
RAMP = [
    (0.00, (0.13, 0.34, 0.20)),
    (0.20, (0.33, 0.55, 0.27)),
    (0.45, (0.76, 0.73, 0.48)),
    (0.70, (0.55, 0.41, 0.29)),
    (0.88, (0.62, 0.58, 0.55)),
    (1.00, (0.97, 0.97, 0.98)),
]


def colormap():
    pos = np.array([p for p, _ in RAMP], dtype=np.float32)
    cols = np.array([c for _, c in RAMP], dtype=np.float32)
    starts = pos[:-1].reshape(1, -1, 1, 1)
    widths = np.diff(pos).reshape(1, -1, 1, 1)
    deltas = np.diff(cols, axis=0).T.reshape(3, -1, 1, 1)  # [3, K-1, 1, 1]
    inits = [
        const("starts", starts),
        const("widths", widths),
        const("deltas", deltas),
        const("base", cols[0]),
        const("eps", 1e-6),
        const("zero", 0.0),
        const("one", 1.0),
    ]
    nodes = [
        helper.make_node("ReduceMin", ["heightmap"], ["lo"], keepdims=1),
        helper.make_node("ReduceMax", ["heightmap"], ["hi"], keepdims=1),
        helper.make_node("Sub", ["hi", "lo"], ["span"]),
        helper.make_node("Add", ["span", "eps"], ["span_e"]),
        helper.make_node("Sub", ["heightmap", "lo"], ["rel"]),
        helper.make_node("Div", ["rel", "span_e"], ["t_lin"]),
        helper.make_node("Clip", ["t_lin", "zero", "one"], ["t_clip"]),
        helper.make_node("Pow", ["t_clip", "gamma"], ["t"]),
        # piecewise-linear ramp: base + Σ delta_i · clip((t − start_i) / width_i, 0, 1)
        helper.make_node("Sub", ["t", "starts"], ["from_start"]),
        helper.make_node("Div", ["from_start", "widths"], ["frac"]),
        helper.make_node("Clip", ["frac", "zero", "one"], ["weights"]),
        helper.make_node("Conv", ["weights", "deltas", "base"], ["image"]),
    ]
    return model(
        "colormap",
        nodes,
        [tensor("heightmap", 1), scalar("gamma")],
        [tensor("image", 3)],
        inits,
    )


MODELS = {
    "image_input.onnx": image_input,
    "upscale.onnx": upscale,
    "blur.onnx": blur,
    "blend.onnx": blend,
    "hillshade.onnx": hillshade,
    "colormap.onnx": colormap,
}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: make_workflow_models.py OUT_DIR")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    for file, build in MODELS.items():
        path = os.path.join(out_dir, file)
        tmp = path + ".part"
        onnx.save(build(), tmp)
        os.replace(tmp, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
