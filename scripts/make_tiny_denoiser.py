#!/usr/bin/env python3
"""Writes a tiny, fast ONNX denoiser for tests: the same interface as the terrain U-Net, few real ops.

    inputs:  noisy    float32 [b, 1, H, W]   (H, W dynamic)
             sigma    float32 [b]
    output:  denoised float32 [b, 1, H, W]

It is an EDM-style preconditioned "network" whose network is a fixed 3x3 Gaussian blur and a tanh:

    c_skip   = sigma_data^2 / (sigma^2 + sigma_data^2)
    c_in     = 1 / sqrt(sigma^2 + sigma_data^2)
    denoised = c_skip * noisy + (1 - c_skip) * tanh(blur(noisy) * c_in * 2)

so at a large sigma the output is a smooth, bounded field in (-1, 1) and at a small sigma it is close to
its input — enough for a sampler to produce a seed-dependent image. Usage: make_tiny_denoiser.py OUT.onnx
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, checker, helper, numpy_helper

SIGMA_DATA = 0.5


def build() -> onnx.ModelProto:
    kernel = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=np.float32)
    kernel = (kernel / kernel.sum()).reshape(1, 1, 3, 3)
    inits = [
        numpy_helper.from_array(kernel, "blur_kernel"),
        numpy_helper.from_array(np.array(SIGMA_DATA**2, dtype=np.float32), "sigma_data_sq"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
        numpy_helper.from_array(np.array([-1, 1, 1, 1], dtype=np.int64), "bcast_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["noisy", "blur_kernel"], ["blurred"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["sigma", "sigma"], ["sigma_sq"]),
        helper.make_node("Add", ["sigma_sq", "sigma_data_sq"], ["total_var"]),
        helper.make_node("Div", ["sigma_data_sq", "total_var"], ["c_skip_b"]),
        helper.make_node("Sqrt", ["total_var"], ["total_std"]),
        helper.make_node("Div", ["one", "total_std"], ["c_in_b"]),
        helper.make_node("Reshape", ["c_skip_b", "bcast_shape"], ["c_skip"]),
        helper.make_node("Reshape", ["c_in_b", "bcast_shape"], ["c_in"]),
        helper.make_node("Mul", ["blurred", "c_in"], ["scaled"]),
        helper.make_node("Mul", ["scaled", "two"], ["scaled2"]),
        helper.make_node("Tanh", ["scaled2"], ["estimate"]),
        helper.make_node("Mul", ["noisy", "c_skip"], ["skip"]),
        helper.make_node("Sub", ["one", "c_skip"], ["c_out"]),
        helper.make_node("Mul", ["estimate", "c_out"], ["out"]),
        helper.make_node("Add", ["skip", "out"], ["denoised"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_denoiser",
        [
            helper.make_tensor_value_info("noisy", TensorProto.FLOAT, ["b", 1, "H", "W"]),
            helper.make_tensor_value_info("sigma", TensorProto.FLOAT, ["b"]),
        ],
        [helper.make_tensor_value_info("denoised", TensorProto.FLOAT, ["b", 1, "H", "W"])],
        initializer=inits,
    )
    # Opset 17 / IR 8: loadable by every ONNX Runtime from 1.14 on.
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="atelier-make-tiny-denoiser",
    )
    model.ir_version = 8
    checker.check_model(model, full_check=True)
    return model


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: make_tiny_denoiser.py OUT.onnx")
    out = sys.argv[1]
    tmp = out + ".part"
    onnx.save(build(), tmp)
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
