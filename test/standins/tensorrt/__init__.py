"""A stand-in for NVIDIA TensorRT's Python bindings (``import tensorrt``) on machines
without a GPU: exactly the part of the API hybridnets_ros calls, with the rules of the real
library that decide whether our code is right (which flags exist in which generation, what
the ONNX parser accepts, when a build or a load fails). Never installed: the tests that need
it load it as ``tensorrt`` (test/standins/__init__.py).

The generation comes from TENSORRT_STANDIN_VERSION when the module is loaded (default
10.3.0, JetPack 6.1/6.2's):
- 8.6: weakly typed only; networks must ask for EXPLICIT_BATCH; FP16/INT8 builder flags and
  an INT8 calibrator; no IProgressMonitor.
- 10.x: adds strongly typed networks (STRONGLY_TYPED), where precision flags are refused;
  EXPLICIT_BATCH is ignored; IProgressMonitor; weak typing and the calibrator still work.
- 11.x: strongly typed only (the flag is accepted and ignored); BuilderFlag has no FP16 or
  INT8 and IBuilderConfig no int8_calibrator: using them raises AttributeError, as the
  removed bindings do.

An engine ("plan") here is a short header (this version, the network's typing and the
builder's precision flags) followed by the parsed ONNX model. Executing it runs that model
with ONNX Runtime on the CPU, reading and writing the memory at the addresses bound with
``set_tensor_address``: host memory, so the backend under test binds host buffers (its one
seam for where buffers live). Numerics are those of the ONNX file: a strongly typed fp16 or
Q/DQ model computes as ONNX Runtime computes it; a weakly typed FP16/INT8 build, whose layer
precisions only a GPU's tactic choice would decide, computes like its fp32 file.

Each class and method names the page of NVIDIA's TensorRT Python API documentation it
follows: DOC11 (11.x) and DOC10 (10.x) below plus the page's path; the 10->11 removals are
listed on MIGRATION11.
"""
from __future__ import annotations

import enum
import json
import logging
import os
from pathlib import Path

import numpy as np

DOC11 = "https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/"
DOC10 = "https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-1001/api/python_api/"
MIGRATION11 = ("https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/"
               "tensorrt-10x-to-11x-python-api-reference.html")

__version__ = os.environ.get("TENSORRT_STANDIN_VERSION", "10.3.0")
_GENERATION = tuple(int(v) for v in __version__.split(".")[:2])
if not (8, 6) <= _GENERATION < (12, 0):
    raise ImportError(f"the TensorRT stand-in models 8.6, 10.x and 11.x, not {__version__}")
_HAS_WEAK_TYPING = _GENERATION < (11, 0)
_HAS_STRONG_TYPING = _GENERATION >= (10, 0)

_log = logging.getLogger("tensorrt")
_PLAN_MAGIC = b"TRT-STANDIN-PLAN\n"


class Logger:
    """DOC11 infer/Core/Logger.html: ``Logger(min_severity=Logger.WARNING)``."""

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = Severity

    def __init__(self, min_severity: Logger.Severity = Severity.WARNING):
        self.min_severity = min_severity

    def log(self, severity: Logger.Severity, msg: str) -> None:
        if severity <= self.min_severity:
            level = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING,
                     3: logging.INFO}.get(int(severity), logging.DEBUG)
            _log.log(level, "[TRT] %s", msg)


class DataType(enum.IntEnum):
    """DOC11 infer/FoundationalTypes/DataType.html (the members ONNX tensors here map to)."""
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8


float32, float16, int8, int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32
_ONNX_TYPES = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32,
               9: DataType.BOOL, 2: DataType.UINT8, 7: DataType.INT64}
_NUMPY_TYPES = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
                DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8,
                DataType.INT64: np.int64}


class TensorIOMode(enum.IntEnum):
    """DOC11 infer/Core/Engine.html: NONE, INPUT, OUTPUT."""
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class Dims(tuple):
    """DOC11 infer/FoundationalTypes/Dims.html: a sequence of ints (``tuple(dims)``)."""


# DOC11 infer/Core/Builder.html, NetworkDefinitionCreationFlag; DOC10 the same page. 11.x
# keeps STRONGLY_TYPED (accepted, ignored: every network is strongly typed).
NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {
    **({"EXPLICIT_BATCH": 0} if _GENERATION < (11, 0) else {}),
    **({"STRONGLY_TYPED": 1} if _HAS_STRONG_TYPING else {})})

# DOC11 infer/Core/BuilderConfig.html, BuilderFlag; MIGRATION11: FP16, INT8 (and the other
# precision flags) are removed in 11.x.
BuilderFlag = enum.IntEnum("BuilderFlag", {
    **({"FP16": 0, "INT8": 1} if _HAS_WEAK_TYPING else {}),
    "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 5, "TF32": 7, "SPARSE_WEIGHTS": 8})


class MemoryPoolType(enum.IntEnum):
    """DOC11 infer/Core/BuilderConfig.html, MemoryPoolType (the one pool used here)."""
    WORKSPACE = 0


class IHostMemory:
    """DOC11 infer/FoundationalTypes/HostMemory.html: a buffer (``bytes(memory)``)."""

    def __init__(self, data: bytes):
        self._data = bytes(data)
        self.nbytes = len(self._data)

    def __bytes__(self) -> bytes:
        return self._data

    def __buffer__(self, flags):
        return memoryview(self._data)


if _HAS_STRONG_TYPING:
    class IProgressMonitor:
        """DOC11 infer/Core/ProgressMonitor.html (TensorRT 10 on): the builder calls
        ``phase_start(phase_name, parent_phase, num_steps)``, ``step_complete(phase_name,
        step)`` (False cancels the build) and ``phase_finish(phase_name)``."""

        def __init__(self):
            pass

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            pass

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True

        def phase_finish(self, phase_name: str) -> None:
            pass


if _HAS_WEAK_TYPING:
    class IInt8EntropyCalibrator2:
        """DOC10 infer/Int8/EntropyCalibrator2.html (deprecated in 10, removed in 11 per
        MIGRATION11): the builder asks ``get_batch_size()``, then ``get_batch(names)`` until
        it returns None, and reads/writes the calibration cache."""

        def __init__(self):
            pass


class INetworkDefinition:
    """DOC11 infer/Graph/Network.html; filled by the OnnxParser. ``num_inputs`` and
    ``num_outputs`` as documented; the model itself is the stand-in's own state."""

    def __init__(self, flags: int):
        self._flags = flags
        self._model = None   # the parsed onnx.ModelProto

    @property
    def _explicit_batch(self) -> bool:
        if _GENERATION >= (10, 0):
            return True
        return bool(self._flags & (1 << NetworkDefinitionCreationFlag.EXPLICIT_BATCH))

    @property
    def _strongly_typed(self) -> bool:
        if _GENERATION >= (11, 0):
            return True
        return _HAS_STRONG_TYPING and bool(
            self._flags & (1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED))

    @property
    def num_inputs(self) -> int:
        return len(self._model.graph.input) if self._model is not None else 0

    @property
    def num_outputs(self) -> int:
        return len(self._model.graph.output) if self._model is not None else 0


class ErrorCode(enum.IntEnum):
    """DOC11 parsers/Onnx/pyOnnx.html, ErrorCode."""
    SUCCESS = 0
    INTERNAL_ERROR = 1
    MEM_ALLOC_FAILED = 2
    MODEL_DESERIALIZE_FAILED = 3
    INVALID_VALUE = 4
    INVALID_GRAPH = 5
    INVALID_NODE = 6
    UNSUPPORTED_GRAPH = 7
    UNSUPPORTED_NODE = 8


class ParserError:
    """DOC11 parsers/Onnx/pyOnnx.html, ParserError: ``code()``, ``desc()``, ``node()``."""

    def __init__(self, code: ErrorCode, desc: str, node: int = -1):
        self._code, self._desc, self._node = code, desc, node

    def code(self) -> ErrorCode:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def __str__(self) -> str:
        return f"In node {self._node} with name: ... [{self._code.name}] {self._desc}"


class OnnxParser:
    """DOC11 parsers/Onnx/pyOnnx.html: ``OnnxParser(network, logger)``, ``parse(model)``,
    ``parse_from_file(model)`` -> bool, ``num_errors``, ``get_error(index)``,
    ``clear_errors()``.

    Checks what TensorRT's parser refuses in this project's graphs: an implicit-batch
    network (8.x), and Q/DQ that is not signed int8 with zero points of 0 (TensorRT's
    explicit quantisation is symmetric int8; ONNX Runtime's default uint8 activations
    and int32 biases do not parse)."""

    def __init__(self, network: INetworkDefinition, logger: Logger):
        self._network, self._logger = network, logger
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> ParserError:
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors.clear()

    def parse_from_file(self, model: str) -> bool:
        try:
            data = Path(model).read_bytes()
        except OSError as exc:
            return self._fail(ErrorCode.MODEL_DESERIALIZE_FAILED, f"cannot read {model}: {exc}")
        return self.parse(data)

    def parse(self, model: bytes, path: str | None = None) -> bool:
        import onnx
        try:
            proto = onnx.load_model_from_string(bytes(model))
            onnx.checker.check_model(proto)
        except Exception as exc:  # the real parser reports any bad model this way
            return self._fail(ErrorCode.MODEL_DESERIALIZE_FAILED, f"invalid ONNX model: {exc}")
        if not self._network._explicit_batch:
            return self._fail(ErrorCode.INVALID_GRAPH, "The ONNX parser only supports networks "
                              "with an explicit batch dimension (EXPLICIT_BATCH)")
        ok = True
        for index, problem in _qdq_problems(proto):
            ok = self._fail(ErrorCode.UNSUPPORTED_NODE, problem, index)
        if ok:
            self._network._model = proto
        return ok

    def _fail(self, code: ErrorCode, desc: str, node: int = -1) -> bool:
        self._errors.append(ParserError(code, desc, node))
        self._logger.log(Logger.ERROR, desc)
        return False


def _qdq_problems(proto):
    """(node index, reason) for every Q/DQ node TensorRT's explicit quantisation refuses."""
    from onnx import numpy_helper
    initializers = {i.name: i for i in proto.graph.initializer}
    quantized_outputs = {n.output[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    for index, node in enumerate(proto.graph.node):
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or not node.input[2]:
            yield index, (f"{node.name}: {node.op_type} without a zero point is uint8: "
                          "TensorRT quantizes to int8")
            continue
        zero_point = initializers.get(node.input[2])
        if zero_point is None:
            yield index, f"{node.name}: the zero point must be a constant"
            continue
        zero = numpy_helper.to_array(zero_point)
        if zero.dtype != np.int8:
            yield index, f"{node.name}: {zero.dtype} zero point: TensorRT supports int8 Q/DQ only"
        elif np.any(zero != 0):
            yield index, f"{node.name}: non-zero zero point: TensorRT quantization is symmetric"
        if node.op_type == "DequantizeLinear":
            source = node.input[0]
            weight = initializers.get(source)
            if weight is not None and weight.data_type != 3:  # 3: INT8
                yield index, f"{node.name}: dequantizes a non-int8 constant (a quantized bias?)"
            elif weight is None and source not in quantized_outputs:
                yield index, f"{node.name}: input {source} is not quantized by a QuantizeLinear"


class IBuilderConfig:
    """DOC11 infer/Core/BuilderConfig.html: ``set_flag``, ``clear_flag``, ``get_flag``,
    ``set_memory_pool_limit(pool, pool_size)``, ``progress_monitor`` (10.x on) and, before
    11.x, ``int8_calibrator``. Unknown attributes raise AttributeError, as the bindings do."""

    __slots__ = ("_flags", "_pools", *(("progress_monitor",) if _HAS_STRONG_TYPING else ()),
                 *(("int8_calibrator",) if _HAS_WEAK_TYPING else ()))

    def __init__(self):
        self._flags: set[BuilderFlag] = set()
        self._pools: dict[MemoryPoolType, int] = {}
        if _HAS_STRONG_TYPING:
            self.progress_monitor = None
        if _HAS_WEAK_TYPING:
            self.int8_calibrator = None

    def set_flag(self, flag: BuilderFlag) -> None:
        self._flags.add(BuilderFlag(flag))

    def clear_flag(self, flag: BuilderFlag) -> None:
        self._flags.discard(BuilderFlag(flag))

    def get_flag(self, flag: BuilderFlag) -> bool:
        return BuilderFlag(flag) in self._flags

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        if pool_size < 0:
            raise ValueError("pool_size must be non-negative")
        self._pools[MemoryPoolType(pool)] = int(pool_size)

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self._pools.get(MemoryPoolType(pool), 1 << 62)


class Builder:
    """DOC11 infer/Core/Builder.html: ``Builder(logger)``, ``create_network(flags=0)``,
    ``create_builder_config()``, ``build_serialized_network(network, config)`` ->
    IHostMemory, or None after logging why."""

    def __init__(self, logger: Logger):
        self._logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        known = sum(1 << int(f) for f in NetworkDefinitionCreationFlag)
        if flags & ~known:
            raise ValueError(f"unknown network creation flags {flags:#x}")
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def build_serialized_network(self, network: INetworkDefinition,
                                 config: IBuilderConfig) -> IHostMemory | None:
        if network._model is None:
            return self._error("the network has no inputs or outputs (nothing was parsed)")
        precision_flags = sorted(f.name for f in config._flags if f.name in ("FP16", "INT8"))
        has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear")
                      for n in network._model.graph.node)
        if network._strongly_typed and precision_flags:
            return self._error(f"BuilderFlag {', '.join(precision_flags)} is not allowed for a "
                               "strongly typed network: types come from the network")
        if not network._strongly_typed and has_qdq and "INT8" not in precision_flags:
            return self._error("the network has Q/DQ layers: enable BuilderFlag.INT8")
        calibrator = getattr(config, "int8_calibrator", None)
        if "INT8" in precision_flags and not has_qdq:
            if calibrator is None:
                return self._error("INT8 without Q/DQ layers needs an int8_calibrator")
            _calibrate(calibrator, network._model)
        monitor = getattr(config, "progress_monitor", None)
        if monitor is not None:
            monitor.phase_start("Building engine", None, 2)
            for step in range(2):
                if not monitor.step_complete("Building engine", step):
                    monitor.phase_finish("Building engine")
                    return self._error("the build was cancelled by the progress monitor")
            monitor.phase_finish("Building engine")
        header = {"version": __version__, "strongly_typed": network._strongly_typed,
                  "builder_flags": precision_flags, "shapes": _static_shapes(network._model)}
        return IHostMemory(_PLAN_MAGIC + json.dumps(header).encode() + b"\n"
                           + network._model.SerializeToString())

    def _error(self, message: str) -> None:
        self._logger.log(Logger.ERROR, message)
        return None


def _session(model):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ONNX Runtime's notes about fp16 kernels are noise here
    options.intra_op_num_threads = min(2, os.cpu_count() or 1)
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _static_shapes(model) -> dict[str, list[int]]:
    """Every I/O tensor's shape for the network's static input shapes, as the builder fixes
    them (ONNX files often leave output dimensions symbolic): one run on zeros."""
    session = _session(model)
    feeds = {}
    for value in model.graph.input:
        tensor = value.type.tensor_type
        feeds[value.name] = np.zeros([d.dim_value for d in tensor.shape.dim],
                                     _NUMPY_TYPES[_ONNX_TYPES[tensor.elem_type]])
    if any(not isinstance(d, int) or d <= 0 for f in feeds.values() for d in f.shape):
        raise ValueError("the stand-in builds static input shapes only")
    outputs = session.run(None, feeds)
    return {**{name: list(f.shape) for name, f in feeds.items()},
            **{o.name: list(v.shape) for o, v in zip(session.get_outputs(), outputs)}}


def _calibrate(calibrator, model) -> None:
    """Feed the calibrator's batches through, as TensorRT's implicit calibration does."""
    names = [i.name for i in model.graph.input]
    if calibrator.read_calibration_cache() is not None:
        return
    calibrator.get_batch_size()
    batches = 0
    while calibrator.get_batch(names) is not None:
        batches += 1
    if batches == 0:
        raise RuntimeError("the calibrator gave no batch")
    calibrator.write_calibration_cache(json.dumps({"batches": batches}).encode())


def plan_header(plan: bytes) -> dict:
    """What a stand-in plan records (for tests): version, strongly_typed, builder_flags and
    the I/O shapes."""
    plan = bytes(plan)
    if not plan.startswith(_PLAN_MAGIC):
        raise ValueError("not a TensorRT stand-in plan")
    return json.loads(plan[len(_PLAN_MAGIC):].split(b"\n", 1)[0])


class Runtime:
    """DOC11 infer/Core/Runtime.html: ``Runtime(logger)``,
    ``deserialize_cuda_engine(serialized_engine)`` -> ICudaEngine, or None (logged) for a
    plan of another TensorRT version or a damaged one."""

    def __init__(self, logger: Logger):
        self._logger = logger

    def deserialize_cuda_engine(self, serialized_engine) -> ICudaEngine | None:
        import onnx
        data = bytes(serialized_engine)
        try:
            header = plan_header(data)
            model = onnx.load_model_from_string(data[len(_PLAN_MAGIC):].split(b"\n", 1)[1])
        except Exception:
            self._logger.log(Logger.ERROR, "1: [runtime.cpp::parsePlan] Error Code 1: "
                             "Serialization (Serialization assertion plan->header.magicTag "
                             "failed.)")
            return None
        if header["version"] != __version__:
            self._logger.log(Logger.ERROR, "The engine plan file is not compatible with this "
                             f"version of TensorRT, expecting library version {__version__} "
                             f"got {header['version']}, please rebuild.")
            return None
        return ICudaEngine(model, data, header["shapes"])


class ICudaEngine:
    """DOC11 infer/Core/Engine.html: ``num_io_tensors``, ``get_tensor_name(index)``,
    ``get_tensor_mode(name)``, ``get_tensor_dtype(name)``, ``get_tensor_shape(name)``,
    ``create_execution_context()``, ``serialize()``. I/O tensors are listed inputs first,
    then outputs, in the network's order."""

    def __init__(self, model, plan: bytes, shapes: dict[str, list[int]]):
        self._plan = plan
        self._tensors: dict[str, tuple[TensorIOMode, DataType, Dims]] = {}
        for mode, values in ((TensorIOMode.INPUT, model.graph.input),
                             (TensorIOMode.OUTPUT, model.graph.output)):
            for value in values:
                self._tensors[value.name] = (mode, _ONNX_TYPES[value.type.tensor_type.elem_type],
                                             Dims(shapes[value.name]))
        self._session = _session(model)

    @property
    def num_io_tensors(self) -> int:
        return len(self._tensors)

    def get_tensor_name(self, index: int) -> str:
        return list(self._tensors)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._tensors[name][0] if name in self._tensors else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._tensors[name][1]

    def get_tensor_shape(self, name: str) -> Dims:
        return self._tensors[name][2]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)

    def serialize(self) -> IHostMemory:
        return IHostMemory(self._plan)


class IExecutionContext:
    """DOC11 infer/Core/ExecutionContext.html: ``set_tensor_address(name, memory)``,
    ``get_tensor_address(name)``, ``set_input_shape(name, shape)`` -> bool,
    ``execute_async_v3(stream_handle)`` -> bool (False, logged, when a tensor has no
    address or the run fails)."""

    def __init__(self, engine: ICudaEngine):
        self.engine = engine
        self._addresses: dict[str, int] = {}

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in self.engine._tensors:
            _log.error("[TRT] setTensorAddress: %s is not an I/O tensor of this engine", name)
            return False
        self._addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def set_input_shape(self, name: str, shape) -> bool:
        mode, _, dims = self.engine._tensors.get(name, (TensorIOMode.NONE, None, None))
        if mode != TensorIOMode.INPUT or tuple(shape) != tuple(dims):
            _log.error("[TRT] setInputShape: %s %s does not fit the engine (%s)", name,
                       tuple(shape), dims)
            return False
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        unbound = [n for n in self.engine._tensors if not self._addresses.get(n)]
        if unbound:
            _log.error("[TRT] enqueueV3: no address set for %s", ", ".join(unbound))
            return False
        session = self.engine._session
        binding = session.io_binding()
        for name, (mode, dtype, dims) in self.engine._tensors.items():
            bind = binding.bind_input if mode == TensorIOMode.INPUT else binding.bind_output
            bind(name, "cpu", 0, _NUMPY_TYPES[dtype], list(dims), self._addresses[name])
        try:
            session.run_with_iobinding(binding)
        except Exception as exc:
            _log.error("[TRT] enqueueV3 failed: %s", exc)
            return False
        return True

