"""What the ``ios-tvm`` command loads: a zoo model (random weights, bound) or an ONNX file, with
the input shapes and precision the command line gives, each mistake a typed error that says
what to do (the CLI prints it as one line)."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
from pathlib import Path
from typing import Any

from ..errors import (
    InputFileError,
    InvalidArgumentError,
    MissingDependencyError,
    MissingFileError,
    UnsupportedModelError,
)


def parse_shape(item: str) -> tuple[str, list[int]]:
    """``NAME=D0,D1,...`` of ``--input-shape`` (``NAME=``: a scalar, rank 0)."""
    name, eq, dims = item.partition("=")
    try:
        shape = [int(d) for d in dims.split(",")] if dims.strip() else []
    except ValueError:
        shape = None
    if not eq or not name.strip() or shape is None:
        raise InvalidArgumentError(f"--input-shape wants NAME=D0,D1,... (e.g. data=1,3,224,224; NAME= for a scalar), "
                                   f"got {item!r}")
    if shape and min(shape) < 1:
        raise InvalidArgumentError(f"--input-shape {item}: every dimension must be >= 1")
    return name.strip(), shape


def input_shapes(args: argparse.Namespace) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for item in args.input_shape or []:
        name, shape = parse_shape(item)
        if name in shapes:
            raise InvalidArgumentError(f"--input-shape gives {name} twice")
        shapes[name] = shape
    return shapes


def is_onnx(args: argparse.Namespace) -> bool:
    return str(args.model).lower().endswith(".onnx")


# -- the model ----------------------------------------------------------------------------------
def check_zoo_name(name: str) -> None:
    """A model that is not an ``.onnx`` file must be a zoo model; a file by another name is
    said to be one, not an unknown model."""
    from .. import models

    if name in models.names():
        return
    path = Path(name)
    if path.is_file():
        raise InputFileError(f"{name} is a file, not a zoo model, and ios_tvm reads model files in ONNX format, named "
                             f"*.onnx: if it is an ONNX model, name it {path.with_suffix('.onnx').name}; else export "
                             "it to ONNX (e.g. torch.onnx.export) or build it in Relax and use the Python API")
    if path.suffix or len(path.parts) > 1:
        raise MissingFileError(f"{name} is neither a zoo model ({', '.join(models.names())}) nor an existing file; "
                               "ONNX files are named *.onnx")


def zoo_kwargs(args: argparse.Namespace) -> dict:
    """``models.get`` keyword arguments from --batch-size / --image-size / --small / --input-shape."""
    from .. import models

    check_zoo_name(args.model)
    shapes = input_shapes(args)
    kwargs: dict = {"batch_size": 1 if args.batch_size is None else args.batch_size}
    if args.small:
        kwargs["small"] = True
    if args.image_size is not None:
        kwargs["image_size"] = args.image_size
    if shapes:
        if list(shapes) != ["data"]:
            raise InvalidArgumentError(f"zoo model {args.model} has one input, data; --input-shape names "
                                       f"{', '.join(n for n in shapes if n != 'data')}")
        wanted = models.shape_kwargs(args.model, shapes["data"], **kwargs)
        for key, flag in (("batch_size", "--batch-size"), ("image_size", "--image-size")):
            given = args.batch_size if key == "batch_size" else args.image_size
            if given is not None and key in wanted and given != wanted[key]:
                raise InvalidArgumentError(f"--input-shape data={','.join(map(str, shapes['data']))} and "
                                           f"{flag} {given} disagree; give one of them")
        kwargs.update(wanted)
    return kwargs


def model_meta(args: argparse.Namespace, mod: Any) -> dict:
    """What the schedule records about the model it was made for (``dtype``: what it computes in;
    ``converted_by``: the ``--dtype`` conversion, if one was made)."""
    from ..ir.precision import model_dtype

    shapes = {p.name: [int(d) for d in p.ty.shape] for p in mod["main"].params}
    precision = {"dtype": model_dtype(mod)}
    if getattr(args, "converted", False):
        precision["converted_by"] = f"--dtype {args.dtype} (ios_tvm.precision.convert: TVM's ToMixedPrecision)"
    if is_onnx(args):
        return {"name": args.model, "inputs": shapes, "weights": "from the file", **precision}
    kwargs = zoo_kwargs(args)
    return {"name": args.model, **kwargs, "inputs": shapes, "weights": "random, seed 0", **precision}


def load_model(args: argparse.Namespace):
    """The model to work on: a zoo name (random weights, seed 0, bound as constants: merging
    needs them) or an ONNX file (its weights as constants), in the precision ``--dtype`` asks
    for (``args.converted`` says whether it converted the model)."""
    from ..ir.precision import convert

    mod = load_given(args)
    args.converted = False
    if getattr(args, "dtype", None):
        converted = convert(mod, args.dtype)
        args.converted = converted is not mod
        mod = converted
    return mod


def load_given(args: argparse.Namespace):
    """The model as given: a zoo model or an ONNX file."""
    from .. import models

    if is_onnx(args):
        given = [flag for flag, value in (("--batch-size", args.batch_size), ("--image-size", args.image_size),
                                          ("--small", args.small or None)) if value is not None]
        if given:
            raise InvalidArgumentError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to zoo models "
                                       "only; an ONNX model's input shapes come "
                                       "from the file, or from --input-shape NAME=D0,D1,... where it leaves them open")
        return load_onnx(args.model, input_shapes(args))
    mod = models.get(args.model, **zoo_kwargs(args))
    return models.bind_params(mod, models.random_params(mod))


def onnx_dims(value_info: Any) -> list[int | str | None] | None:
    """Declared dimensions of an ONNX graph input: ints, names of symbolic ones, ``None`` unknown
    (``[]``: a scalar; ``None``: no shape declared at all)."""
    if not value_info.type.tensor_type.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or None)
    return dims


def load_onnx(path: str, shapes: dict[str, list[int]]):
    """An ONNX file as a Relax module, its inputs' shapes checked against ``--input-shape``."""
    import warnings

    file = Path(path)
    if not file.exists():
        raise MissingFileError(f"no ONNX file at {path}")
    if file.is_dir():
        raise InputFileError(f"{path} is a directory, not an ONNX file")
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError:
        raise MissingDependencyError("reading ONNX models needs the onnx package, an optional extra of ios_tvm: "
                                     "pip install onnx (or pip install '.[onnx]' in the source tree)") from None
    try:
        model = onnx.load(str(file))
    except OSError as err:
        raise InputFileError(f"cannot read {path}: {err.strerror or err}") from None
    except (DecodeError, ValueError, UnicodeDecodeError) as err:
        raise InputFileError(f"{path} is not an ONNX model: it does not parse as one ({str(err).strip() or type(err).__name__}); "
                             "is it truncated, or another format?") from None
    if not model.graph.node:
        raise InputFileError(f"{path} is not an ONNX model: it parses, but holds no graph (an empty or foreign file?)")
    initializers = {t.name for t in model.graph.initializer}
    inputs = {vi.name: onnx_dims(vi) for vi in model.graph.input if vi.name not in initializers}

    def show(dims: list | None) -> str:
        if dims is None:
            return "(no shape)"
        return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"

    for name, shape in shapes.items():
        if name not in inputs:
            listed = "; ".join(f"{n} {show(d)}" for n, d in inputs.items())
            raise InvalidArgumentError(f"--input-shape names {name}, which is not an input of {path} (its inputs: {listed})")
        declared = inputs[name]
        if declared is not None and len(declared) != len(shape):
            scalar = f" (a scalar: --input-shape {name}=)" if not declared else ""
            raise InvalidArgumentError(f"--input-shape {name}={','.join(map(str, shape))} has {len(shape)} "
                                       f"dimension{'s' if len(shape) != 1 else ''}; input {name} of {path} has "
                                       f"{len(declared)}: {show(declared)}{scalar}")
        for i, (want, have) in enumerate(zip(shape, declared or [])):
            if isinstance(have, int) and have != want:
                raise InvalidArgumentError(f"--input-shape {name}={','.join(map(str, shape))}: dimension {i} of input "
                                           f"{name} is fixed to {have} by {path}")
    for name, declared in inputs.items():
        if name not in shapes and (declared is None or any(not isinstance(d, int) for d in declared)):
            example = ",".join(str(d) if isinstance(d, int) else "1" for d in declared or []) or "D0,D1,..."
            what = f"has dynamic dimensions {show(declared)}" if declared else "declares no shape"
            example += f" (or {name}= for a scalar)" if declared is None else ""
            raise InvalidArgumentError(f"input {name} of {path} {what}, and ios_tvm schedules static shapes: give "
                                       f"them, e.g. --input-shape {name}={example}")
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # noqa: BLE001 - onnx's checker raises several types
        logging.getLogger("ios_tvm").warning("ios_tvm: onnx's checker reports on %s: %s (importing anyway, as TVM does)",
                                             path, str(err).strip().splitlines()[0])
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    # TVM's importer warns with onnx's checker (reported above) and prints the operator it failed on
    # (the error below says it): neither is for the user
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", category=UserWarning, module=r"tvm\.relax\.frontend\.onnx")
        try:
            return from_onnx(model, shape_dict=shapes or None, keep_params_in_input=False)
        except tvm.error.OpNotImplemented as err:
            raise UnsupportedModelError(f"TVM's ONNX importer cannot import {path}: "
                                        f"{str(err).strip().splitlines()[-1]}") from None
        except Exception as err:  # noqa: BLE001 - TVM's importer on a file it was given: the model's problem
            given = " with --input-shape " + " ".join(f"{n}={','.join(map(str, d))}" for n, d in shapes.items())
            raise UnsupportedModelError(
                f"TVM's ONNX importer failed on {path}{given} ({type(err).__name__}: "
                f"{(str(err).strip().splitlines() or [''])[-1]}): check the input shapes against the model's, "
                "or the model uses an operator TVM cannot import") from None


def model_inputs(mod: Any) -> list:
    """Deterministic random arrays for ``main``'s inputs (zeros for integer inputs):
    :func:`ios_tvm.ir.tensors.input_arrays`."""
    from ..ir.tensors import input_arrays

    return input_arrays(mod)


# -- the commands ---------------------------------------------------------------------------------
def describe_model(args: argparse.Namespace) -> str:
    half = f", in {args.dtype}" if getattr(args, "dtype", None) else ""
    if is_onnx(args):
        return f"{args.model}{half}"
    kwargs = zoo_kwargs(args)
    from .. import models

    size = models.describe_input(args.model, **kwargs)
    return f"{args.model}{' (small)' if kwargs.get('small') else ''} ({size}, batch {kwargs['batch_size']}{half})"

