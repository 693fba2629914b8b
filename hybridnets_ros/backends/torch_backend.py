"""PyTorch, CPU or CUDA: fp32 or fp16, eager or optimised, optionally as a CUDA graph.

Optimised (the default) traces the network per input shape and freezes it (BatchNorm folded
into the convs, constants inlined), with weights and input in channels-last layout: about
twice as fast as eager on CPU with the same outputs (docs/benchmarks.md). The trace is per
shape because MaxPoolSame's padding depends on it, and the first two runs of a new trace
are slow (the JIT profiles them), so ``prepare`` warms it up. ``optimize=False`` is plain eager PyTorch, the benchmark's baseline.
"""
from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from .base import Array, Backend, BackendSpec, BackendUnavailable, ShapeLru
from .build_lock import exclusive

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
WARMUP_RUNS = 2


def require_cuda(device: str, what: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(
            f"{what} needs CUDA: missing a CUDA device (torch.cuda.is_available() is False; "
            f"torch {torch.__version__} built for CUDA {torch.version.cuda or 'none'})")


class TorchBackend(Backend):
    name = "torch"
    batching = True  # one trace per (batch, H, W)

    def __init__(self, spec: BackendSpec):
        device, precision, optimize, cuda_graph = (spec.device, spec.precision, spec.optimize,
                                                   spec.cuda_graph)
        require_cuda(device, "device 'cuda'")
        self.adapter = spec.adapter
        if precision not in DTYPES:
            raise BackendUnavailable(f"torch runs fp32 or fp16, not {precision!r} (INT8: "
                                     "onnxruntime on CPU, tensorrt or torch2trt on CUDA)")
        on_cuda = device.startswith("cuda")
        if precision == "fp16" and not on_cuda:
            raise BackendUnavailable("torch fp16 needs a CUDA device (CPU convolutions in "
                                     "fp16 are slower than fp32); use precision fp32 on CPU")
        if cuda_graph and not on_cuda:
            raise BackendUnavailable("CUDA graphs need a CUDA device")
        self.device = device
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.optimize = optimize
        self.cuda_graph = cuda_graph
        self.builds_beside_inference = not cuda_graph
        self._said_eviction = False
        # A private copy: converting dtype/layout must not change the caller's model.
        self.model = copy.deepcopy(spec.model).to(device=device, dtype=self.dtype).eval()
        self.memory_format = torch.channels_last if optimize else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.engines: dict[tuple[int, int, int], tuple[torch.Tensor, Callable[[], tuple]]] = \
            ShapeLru(spec.max_engines)

    def prepare(self, input_hw: tuple[int, int], batch: int = 1) -> None:
        self._runner((batch, *input_hw))

    def _runner(self, shape: tuple[int, int, int]) -> tuple[torch.Tensor, Callable[[], tuple]]:
        """The input buffer for a (batch, H, W) and a function running the network on it."""
        if shape in self.engines:
            return self.engines[shape]
        started = time.monotonic()
        batch, *hw = shape
        buffer = torch.zeros((batch, 3, *hw), device=self.device, dtype=self.dtype).contiguous(
            memory_format=self.memory_format)
        module: Callable = self.model
        if self.optimize:
            # Traced while no ONNX export runs (build_lock): the tracer sees its flag.
            with exclusive("torch trace"), torch.no_grad(), warnings.catch_warnings():
                # The tracer warns that MaxPoolSame's padding becomes a constant: intended,
                # each shape gets its own trace. TorchScript also announces its deprecation
                # in favour of torch.compile, which compiled for minutes per shape and ran
                # no faster (docs/benchmarks.md).
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.freeze(torch.jit.trace(self.model, buffer, check_trace=False))

        if self.cuda_graph:
            run = _capture_graph(module, buffer)
        else:
            def run() -> tuple:
                with torch.inference_mode():
                    return module(buffer)

            if self.optimize:  # the JIT optimises a trace during its first runs
                for _ in range(WARMUP_RUNS):
                    run()
        if self.optimize and len(self.engines) >= self.engines.size and not self._said_eviction:
            self._said_eviction = True
            log.warning("torch: more network input sizes than max_engines=%d: the least "
                        "recently used trace is dropped, but TorchScript keeps most of a "
                        "dropped trace's memory (PyTorch issue 35600; docs/benchmarks.md). "
                        "With changing image sizes prefer backend onnxruntime or openvino, "
                        "whose engines give their memory back", self.engines.size)
        self.engines[shape] = (buffer, run)
        log.info("torch: %s network ready for input %dx%dx%d in %.1f s", self._mode(), batch,
                 hw[1], hw[0], time.monotonic() - started)
        return self.engines[shape]

    def infer(self, inputs: Array) -> tuple:
        buffer, run = self._runner((inputs.shape[0], *inputs.shape[2:]))
        if isinstance(inputs, np.ndarray):
            inputs = torch.from_numpy(inputs)
        if inputs.data_ptr() != buffer.data_ptr():
            buffer.copy_(inputs, non_blocking=True)  # casts and changes layout in one pass
        outputs = run()
        if buffer.is_cuda:  # finish here so the caller's timings and host reads are honest
            torch.cuda.synchronize(buffer.device)
        return self.adapter.pack(outputs)

    def _mode(self) -> str:
        mode = "frozen channels-last" if self.optimize else "eager"
        return mode + (" + CUDA graph" if self.cuda_graph else "")

    def describe(self) -> str:
        where = (f"cpu, {torch.get_num_threads()} threads" if self.device == "cpu"
                 else self.device)
        return f"torch {torch.__version__} {self.precision} {self._mode()} on {where}"


def _capture_graph(module: Callable, buffer: torch.Tensor) -> Callable[[], tuple]:
    """Record one run of ``module`` on ``buffer`` as a CUDA graph; replays reuse its memory.

    Warm-up runs happen on a side stream first, as CUDA graph capture requires.
    """
    stream = torch.cuda.Stream(buffer.device)
    stream.wait_stream(torch.cuda.current_stream(buffer.device))
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(WARMUP_RUNS):
            module(buffer)
    torch.cuda.current_stream(buffer.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        outputs = module(buffer)

    def replay() -> tuple:
        graph.replay()
        return outputs

    return replay
