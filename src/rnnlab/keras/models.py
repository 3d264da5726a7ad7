"""Keras models: ``Sequential``, functional ``Model``, ``load_model``.

A model is an ``nn.Module`` (so it also works in a hand-written PyTorch loop); ``compile`` /
``fit`` / ``evaluate`` / ``predict`` delegate to the one trainer, :class:`rnnlab.train.Trainer`.
``save`` writes one safetensors file: the weights, plus the architecture and compile settings as
JSON metadata (no pickle); ``load_model`` rebuilds the model from it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from rnnlab.errors import RnnlabError
from rnnlab.keras import optimizers as kopt
from rnnlab.keras.layers import InputLayer, KerasTensor, Layer, _RNNLayer, deserialize, serialize
from rnnlab.runs import atomic_write_bytes
from rnnlab.train import Trainer
from rnnlab.train.checkpoint import CheckpointError, load_model_weights

FORMAT = "rnnlab-keras-model"


def _shape_str(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _data_shapes(x) -> list[tuple]:
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    return [tuple(np.shape(v)) if not isinstance(v, Tensor) else tuple(v.shape) for v in items]


def _items(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _flexible_shape(value, shape: tuple) -> tuple:
    """A lazily built model accepts any sequence length, as Keras' does: time axes become None."""
    dtype = value.dtype if isinstance(value, (np.ndarray, Tensor)) else np.asarray(value).dtype
    integer = not (dtype.is_floating_point if isinstance(dtype, torch.dtype) else np.issubdtype(dtype, np.floating))
    if len(shape) == 2 and integer:
        return (None, None)  # token ids (batch, time)
    if len(shape) >= 3:
        return (None,) * (len(shape) - 1) + (shape[-1],)
    return (None, *shape[1:])


class _Model(nn.Module):
    """What Sequential and Model share: compile/fit/evaluate/predict/summary/save."""

    def __init__(self, name: str):
        super().__init__()
        self.model_name = name
        self._trainer: Trainer | None = None
        self._compile_args: dict | None = None

    # -- to be provided --------------------------------------------------------------------

    def input_shapes(self) -> list[tuple] | None:  # without the batch axis
        raise NotImplementedError

    def all_layers(self) -> list[Layer]:
        raise NotImplementedError

    # -- compile / fit ---------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, **kwargs) -> None:
        """``optimizer`` (name or ``rnnlab.keras.optimizers`` object), ``loss`` (name or callable), ``metrics``."""
        if loss is None:
            raise RnnlabError("compile needs a loss, e.g. loss='mse' or loss='sparse_categorical_crossentropy'")
        opt = kopt.get(optimizer)
        self._compile_args = {"optimizer": opt, "loss": loss, "metrics": list(metrics or [])}
        self._trainer = None

    def _get_trainer(self) -> Trainer:
        if self._compile_args is None:
            raise RnnlabError("the model must be compiled before fit/evaluate: call model.compile(optimizer, loss)")
        if self._trainer is None:
            opt: kopt.Optimizer = self._compile_args["optimizer"]
            self._trainer = Trainer(self, loss=self._compile_args["loss"], optimizer=opt.name,
                                    learning_rate=opt.learning_rate, metrics=self._compile_args["metrics"],
                                    clipnorm=opt.clipnorm, clipvalue=opt.clipvalue, optimizer_kwargs=opt.kwargs,
                                    weight_decay=opt.weight_decay, seed=None)
            self._trainer.keras_model = self
        return self._trainer

    def _check_and_build(self, x) -> None:
        """Build from the data if needed; a clear error when the data's shape is not the model's."""
        if x is None or not isinstance(x, (np.ndarray, Tensor, list, tuple)):
            return
        got = _data_shapes(x)
        expected = self.input_shapes()
        if expected is None:
            self.build_from_shapes([_flexible_shape(v, g) for v, g in zip(_items(x), got)])
            return
        if len(got) != len(expected):
            raise RnnlabError(f"the model has {len(expected)} input(s) {[_shape_str(e) for e in expected]}, "
                              f"got {len(got)} array(s) of shapes {[_shape_str(g) for g in got]}")
        for exp, g in zip(expected, got):
            data = g[1:]
            if len(data) != len(exp) or any(e is not None and e != d for e, d in zip(exp, data)):
                raise RnnlabError(
                    f"the model expects input of shape (batch, {', '.join('None' if e is None else str(e) for e in exp)}) "
                    f"(input_shape={_shape_str(exp)}), got data of shape {_shape_str(g)}"
                )

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, initial_epoch=0, **kwargs):
        self._check_and_build(x)
        trainer = self._get_trainer()
        trainer.callbacks = list(callbacks or [])
        if validation_data is not None and isinstance(validation_data, (tuple, list)):
            validation_data = tuple(validation_data[:2])
        return trainer.fit(x, y, epochs=epochs, batch_size=batch_size or 32, validation_data=validation_data,
                           validation_split=validation_split, shuffle=shuffle,
                           verbose=1 if verbose == "auto" else int(verbose), initial_epoch=initial_epoch)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False, **kwargs):
        """The loss, or ``[loss, *metrics]`` when compiled with metrics (``return_dict=True``: a dict)."""
        self._check_and_build(x)
        result = self._get_trainer().evaluate(x, y, batch_size=batch_size or 32)
        if return_dict:
            return result
        values = [result["loss"]] + [result[name] for name, _ in self._get_trainer().metrics]
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose="auto", **kwargs) -> np.ndarray:
        self._check_and_build(x)
        trainer = self._trainer or Trainer(self, loss="mse", seed=None)
        out = trainer.predict(x, batch_size=batch_size or 32)
        return out.numpy()

    def __call__(self, *args, **kwargs):
        if args and isinstance(args[0], KerasTensor):
            raise RnnlabError("calling a whole model on a symbolic tensor (nesting models) is not supported yet")
        if args and isinstance(args[0], np.ndarray):
            args = tuple(torch.as_tensor(a, dtype=torch.float32 if a.dtype.kind == "f" else None) for a in args)
        return super().__call__(*args, **kwargs)

    def reset_states(self) -> None:
        for layer in self.all_layers():
            if isinstance(layer, _RNNLayer) or hasattr(layer, "layer") and isinstance(layer.layer, _RNNLayer):
                layer.reset_states()

    # -- weights ---------------------------------------------------------------------------

    def get_weights(self) -> list[np.ndarray]:
        return [p.detach().cpu().numpy().copy() for p in self.parameters()]

    def set_weights(self, weights) -> None:
        params = list(self.parameters())
        if len(weights) != len(params):
            raise RnnlabError(f"set_weights expects {len(params)} arrays, got {len(weights)}")
        with torch.no_grad():
            for p, w in zip(params, weights):
                p.copy_(torch.as_tensor(np.asarray(w), dtype=p.dtype))

    def count_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- summary ---------------------------------------------------------------------------

    def summary(self, print_fn=print) -> None:
        rows = self._summary_rows()
        width = [max(32, *(len(r[0]) for r in rows)), 26, 12]
        line = "-" * sum(width)
        print_fn(f'Model: "{self.model_name}"')
        print_fn(line)
        print_fn("Layer (type)".ljust(width[0]) + "Output Shape".ljust(width[1]) + "Param #")
        print_fn("=" * sum(width))
        for name, shape, params in rows:
            print_fn(name.ljust(width[0]) + shape.ljust(width[1]) + str(params))
        total = self.count_params()
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        print_fn("=" * sum(width))
        print_fn(f"Total params: {total:,}")
        print_fn(f"Trainable params: {trainable:,}")
        print_fn(f"Non-trainable params: {total - trainable:,}")

    # -- saving ----------------------------------------------------------------------------

    def get_config(self) -> dict:
        raise NotImplementedError

    def save(self, filepath, overwrite: bool = True, **kwargs) -> None:
        """One safetensors file: weights + JSON architecture and compile settings (no pickle)."""
        path = Path(filepath)
        if path.exists() and not overwrite:
            raise RnnlabError(f"{path} exists and overwrite=False")
        if self.input_shapes() is None:
            raise RnnlabError("save needs a built model: call fit/predict once or give input_shape to the first layer")
        compile_cfg = None
        if self._compile_args is not None:
            loss = self._compile_args["loss"]
            if isinstance(loss, str) and all(isinstance(m, str) for m in self._compile_args["metrics"]):
                compile_cfg = {"optimizer": self._compile_args["optimizer"].get_config(), "loss": loss,
                               "metrics": self._compile_args["metrics"]}
        meta = {"format": FORMAT, "version": "1", "config": json.dumps(self.get_config()),
                "compile": json.dumps(compile_cfg)}
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(path, st_save(tensors, metadata=meta))

    save_weights = save


class Sequential(_Model):
    """A linear stack of layers: ``Sequential([LSTM(32, input_shape=(T, F)), Dense(1)])``."""

    def __init__(self, layers=None, name: str | None = None):
        super().__init__(name or "sequential")
        self.layers = nn.ModuleList()
        self._input_shape: tuple | None = None
        for layer in layers or []:
            self.add(layer)

    def add(self, layer) -> None:
        if isinstance(layer, KerasTensor):  # Sequential([Input(shape=...), ...]) as in Keras 3
            self._input_shape = tuple(layer.shape[1:])
            return
        if isinstance(layer, InputLayer):
            self._input_shape = tuple(layer.declared_input_shape)
            return
        if not isinstance(layer, Layer):
            raise RnnlabError(f"Sequential.add expects an rnnlab.keras layer, got {type(layer).__name__}")
        if not self.layers and self._input_shape is None and layer.declared_input_shape is not None:
            self._input_shape = tuple(layer.declared_input_shape)
        self.layers.append(layer)
        if self._input_shape is not None:
            self.build_from_shapes([(None, *self._input_shape)])

    def pop(self) -> Layer:
        return self.layers.pop(-1)

    def input_shapes(self):
        return None if self._input_shape is None else [self._input_shape]

    def all_layers(self):
        return list(self.layers)

    def build_from_shapes(self, shapes: list[tuple]) -> None:
        shape = tuple(shapes[0])
        self._input_shape = shape[1:]
        for layer in self.layers:
            layer._ensure_built(shape)
            shape = layer.compute_output_shape(shape)
            if isinstance(shape, list):
                shape = shape[0]

    build = build_from_shapes

    def forward(self, x):
        mask = None
        for layer in self.layers:
            x, mask = layer.run(x, mask)
            if isinstance(x, list):
                raise RnnlabError(f"layer {layer.name} returns several tensors (return_state=True); use the functional Model")
        return x

    def _summary_rows(self):
        rows, shape = [], (None, *self._input_shape) if self._input_shape else None
        for layer in self.layers:
            if shape is not None:
                shape = layer.compute_output_shape(shape)
                shape = shape[0] if isinstance(shape, list) else shape
            rows.append((f"{layer.name} ({type(layer).__name__})", _shape_str(shape) if shape else "?", layer.count_params()))
        return rows

    def get_config(self):
        return {"class_name": "Sequential", "name": self.model_name, "input_shape": list(self._input_shape),
                "layers": [serialize(layer) for layer in self.layers]}


class Model(_Model):
    """Functional model: ``Model(inputs=Input(...), outputs=layer(...)(...))``."""

    def __init__(self, inputs=None, outputs=None, name: str | None = None):
        super().__init__(name or "functional")
        if inputs is None or outputs is None:
            raise RnnlabError("Model needs inputs= and outputs= (subclassing keras.Model is not supported; "
                              "subclass torch.nn.Module and use rnnlab.train.Trainer instead)")
        self.inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        self.outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        self._multi_output = isinstance(outputs, (list, tuple))
        for t in self.inputs + self.outputs:
            if not isinstance(t, KerasTensor):
                raise RnnlabError(f"Model inputs and outputs must be symbolic tensors from Input/layers, got {type(t).__name__}")
        self._calls = self._topological_calls()
        self.layer_modules = nn.ModuleDict()
        for layer, _, _ in self._calls:
            if layer.name not in self.layer_modules:
                self.layer_modules[layer.name] = layer

    def _topological_calls(self):
        """Every layer call between inputs and outputs, each after the calls it depends on."""
        order, seen = [], set()

        def visit(t: KerasTensor):
            key = id(t.inputs), id(t.layer)
            if key in seen:
                return
            for parent in t.inputs:
                visit(parent)
            seen.add(key)
            if not isinstance(t.layer, InputLayer):
                order.append((t.layer, t.inputs, key))

        for t in self.outputs:
            visit(t)
        for t in self.inputs:
            if not isinstance(t.layer, InputLayer):
                raise RnnlabError("Model inputs must come from keras.Input(...)")
        return order

    def input_shapes(self):
        return [tuple(t.shape[1:]) for t in self.inputs]

    def all_layers(self):
        return list(self.layer_modules.values())

    def build_from_shapes(self, shapes):
        pass  # a functional model is built when its layers are called on Input tensors

    def forward(self, *xs):
        if len(xs) != len(self.inputs):
            raise RnnlabError(f"the model takes {len(self.inputs)} input(s), got {len(xs)}")
        values = {(id(t.inputs), id(t.layer)): ([x], [None]) for t, x in zip(self.inputs, xs)}
        for layer, inputs, key in self._calls:
            args = [values[(id(p.inputs), id(p.layer))] for p in inputs]
            tensors = [a[0][p.index] for a, p in zip(args, inputs)]
            masks = [a[1][p.index] for a, p in zip(args, inputs)]
            out, mask = layer.run(tensors if len(tensors) > 1 else tensors[0], masks if len(masks) > 1 else masks[0])
            outs = out if isinstance(out, list) else [out]
            values[key] = (outs, [mask] * len(outs))
        results = [values[(id(t.inputs), id(t.layer))][0][t.index] for t in self.outputs]
        return results if self._multi_output else results[0]

    def _summary_rows(self):
        rows = [(f"{t.layer.name} (InputLayer)", _shape_str(t.shape), 0) for t in self.inputs]
        for layer, inputs, _ in self._calls:
            shapes = layer.compute_output_shape([p.shape for p in inputs] if len(inputs) > 1 else inputs[0].shape)
            shape = shapes[0] if isinstance(shapes, list) else shapes
            rows.append((f"{layer.name} ({type(layer).__name__})", _shape_str(shape), layer.count_params()))
        return rows

    def get_config(self):
        tensor_ids: dict[int, list] = {}
        calls = []
        for i, t in enumerate(self.inputs):
            tensor_ids[id(t)] = ["input", i, 0]
        call_index = {}
        for layer, inputs, key in self._calls:
            refs = []
            for p in inputs:
                pkey = (id(p.inputs), id(p.layer))
                refs.append(["input", [id(x) for x in self.inputs].index(id(p)), 0] if isinstance(p.layer, InputLayer)
                            else ["call", call_index[pkey], p.index])
            call_index[key] = len(calls)
            calls.append({"layer": layer.name, "inputs": refs})
        outputs = [["call", call_index[(id(t.inputs), id(t.layer))], t.index] for t in self.outputs]
        return {"class_name": "Model", "name": self.model_name,
                "inputs": [{"shape": list(t.shape[1:]), "dtype": t.dtype} for t in self.inputs],
                "layers": [serialize(layer) for layer in self.layer_modules.values()], "calls": calls,
                "outputs": outputs, "multi_output": self._multi_output}


def model_from_config(cfg: dict) -> _Model:
    if cfg.get("class_name") == "Sequential":
        return Sequential([deserialize(spec) for spec in cfg["layers"]], name=cfg.get("name"))._with_input(cfg["input_shape"])
    if cfg.get("class_name") == "Model":
        from rnnlab.keras.layers import Input

        layers = {spec["config"]["name"]: deserialize(spec) for spec in cfg["layers"]}
        inputs = [Input(shape=tuple(i["shape"]), dtype=i.get("dtype", "float32")) for i in cfg["inputs"]]
        produced: list = []

        def ref(r):
            kind, i, j = r
            if kind == "input":
                return inputs[i]
            out = produced[i]
            return out[j] if isinstance(out, list) else out

        for call in cfg["calls"]:
            args = [ref(r) for r in call["inputs"]]
            produced.append(layers[call["layer"]](args if len(args) > 1 else args[0]))
        outputs = [ref(r) for r in cfg["outputs"]]
        return Model(inputs=inputs, outputs=outputs if cfg.get("multi_output") else outputs[0], name=cfg.get("name"))
    raise CheckpointError(f"unknown model class {cfg.get('class_name')!r} in the model file")


def _with_input(self: Sequential, shape) -> Sequential:
    if self._input_shape is None:
        self.build_from_shapes([(None, *shape)])
    return self


Sequential._with_input = _with_input


def load_model(filepath, compile: bool = True) -> _Model:
    """Rebuild a model written by ``model.save`` (weights identical, predictions identical)."""
    path = Path(filepath)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    data = path.read_bytes()
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        tensors = st_load(data)
    except Exception as exc:
        raise CheckpointError(f"model file {path} is corrupt or truncated ({exc})") from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnnlab.keras model file (format {meta.get('format')!r})")
    if meta.get("version") != "1":
        raise CheckpointError(f"{path} has model format version {meta.get('version')}, this rnnlab reads version 1")
    try:
        model = model_from_config(json.loads(meta["config"]))
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"model file {path} has an unusable architecture config: {exc}") from None
    load_model_weights(model, tensors, path)
    compile_cfg = json.loads(meta.get("compile") or "null")
    if compile and compile_cfg:
        model.compile(optimizer=kopt.from_config(compile_cfg["optimizer"]), loss=compile_cfg["loss"],
                      metrics=compile_cfg["metrics"])
    return model
