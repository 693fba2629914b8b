"""A stand-in for torch2trt (NVIDIA-AI-IOT/torch2trt, the 0.5 API): its public
``torch2trt()`` call and ``TRTModule``, over whatever ``tensorrt`` is loaded (the TensorRT
stand-in in the tests). Never installed; loaded as ``torch2trt`` by the tests that need it.

The real converter walks the module with its layer converters and fills a TensorRT network;
with ``use_onnx=True`` it exports ONNX and parses that. This stand-in always takes the ONNX
route (the network's content is not what is under test) and then builds as torch2trt does:
``fp16_mode`` sets BuilderFlag.FP16, ``int8_mode`` sets BuilderFlag.INT8 with a calibrator
over ``int8_calib_dataset`` (IInt8EntropyCalibrator2), ``max_workspace_size`` the workspace
pool. On TensorRT 11 those flags and the calibrator do not exist, so fp16/int8 conversions
fail there as torch2trt's do.
"""
from __future__ import annotations

import io
import warnings

import torch

import tensorrt as trt

__version__ = "0.5.0"


class TRTModule(torch.nn.Module):
    """``TRTModule(engine=None, input_names=None, output_names=None)``: runs ``engine`` on
    torch tensors; ``engine`` is what ``torch2trt()`` built (``.engine.serialize()`` gives
    the plan). Tensors are bound where they are (host memory with the TensorRT stand-in)."""

    def __init__(self, engine=None, input_names=None, output_names=None):
        super().__init__()
        self.engine = engine
        self.input_names = list(input_names or [])
        self.output_names = list(output_names or [])
        self.context = engine.create_execution_context() if engine is not None else None

    def forward(self, *inputs):
        outputs = []
        for name, tensor in zip(self.input_names, inputs):
            tensor = tensor.contiguous()
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        for name in self.output_names:
            dtype = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}[
                self.engine.get_tensor_dtype(name)]
            out = torch.empty(tuple(self.engine.get_tensor_shape(name)), dtype=dtype,
                              device=inputs[0].device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream().cuda_stream if inputs[0].is_cuda else 0
        if not self.context.execute_async_v3(stream):
            raise RuntimeError("TRTModule: execution failed")
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _calibrator(dataset, names):
    class DatasetCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.items = iter(dataset)

        def get_batch_size(self):
            return 1

        def get_batch(self, names_):
            item = next(self.items, None)
            if item is None:
                return None
            if len(item) != len(names):
                raise ValueError(f"calibration item of {len(item)} tensors, {len(names)} inputs")
            return [int(t.data_ptr()) for t in item]

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            pass

    return DatasetCalibrator()


def torch2trt(module, inputs, input_names=None, output_names=None,
              log_level=trt.Logger.ERROR, fp16_mode=False, max_workspace_size=1 << 25,
              strict_type_constraints=False, keep_network=True, int8_mode=False,
              int8_calib_dataset=None, int8_calib_algorithm=None, use_onnx=False,
              default_device_type=None, dla_core=0, gpu_fallback=True, device_types=None,
              min_shapes=None, max_shapes=None, opt_shapes=None, onnx_opset=None,
              max_batch_size=None, avg_timing_iterations=None, **kwargs):
    """``module`` (called on ``inputs``, a list of tensors) -> a TRTModule with ``.engine``."""
    input_names = list(input_names or [f"input_{i}" for i in range(len(inputs))])
    with torch.no_grad():
        outputs = module(*inputs)
    count = len(outputs) if isinstance(outputs, (tuple, list)) else 1
    output_names = list(output_names or [f"output_{i}" for i in range(count)])
    exported = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs), exported, dynamo=False,
                          opset_version=onnx_opset or 17, input_names=input_names,
                          output_names=output_names)
    logger = trt.Logger(log_level)
    builder = trt.Builder(logger)
    flags = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if flags is None else 1 << int(flags))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(exported.getvalue()):
        raise RuntimeError("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, max_workspace_size)
    if fp16_mode:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8_mode:
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _calibrator(int8_calib_dataset or [inputs], input_names)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("torch2trt: the engine build failed (see the TensorRT log)")
    engine = trt.Runtime(logger).deserialize_cuda_engine(bytes(serialized))
    return TRTModule(engine, input_names, output_names)
