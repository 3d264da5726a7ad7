"""Keras optimizer objects (``Adam(learning_rate=1e-3, clipnorm=1.0)``): settings only; the trainer
builds the torch optimizer once the model's weights exist."""
from __future__ import annotations

from rnnlab.errors import RnnlabError


class Optimizer:
    name = "adam"
    defaults: dict = {}

    def __init__(self, learning_rate: float = 0.001, clipnorm: float | None = None, clipvalue: float | None = None,
                 weight_decay: float | None = None, global_clipnorm: float | None = None, **kwargs):
        unknown = set(kwargs) - set(self.defaults) - {"name", "use_ema", "jit_compile", "decay"}
        if unknown:
            raise RnnlabError(f"{type(self).__name__} got unexpected arguments {sorted(unknown)}")
        if not callable(learning_rate) and not (isinstance(learning_rate, (int, float)) and learning_rate >= 0):
            raise RnnlabError(f"learning_rate must be a number >= 0, got {learning_rate!r}")
        self.learning_rate = float(learning_rate)
        self.clipnorm = clipnorm if clipnorm is not None else global_clipnorm
        self.clipvalue, self.weight_decay = clipvalue, weight_decay or 0.0
        self.kwargs = {k: kwargs.get(k, v) for k, v in self.defaults.items()}

    def get_config(self) -> dict:
        return {"class_name": type(self).__name__, "learning_rate": self.learning_rate, "clipnorm": self.clipnorm,
                "clipvalue": self.clipvalue, "weight_decay": self.weight_decay, **self.kwargs}


class Adam(Optimizer):
    name = "adam"
    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False}


class AdamW(Optimizer):
    name = "adamw"
    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False}

    def __init__(self, learning_rate=0.001, weight_decay=0.004, **kwargs):
        super().__init__(learning_rate, weight_decay=weight_decay, **kwargs)


class SGD(Optimizer):
    name = "sgd"
    defaults = {"momentum": 0.0, "nesterov": False}

    def __init__(self, learning_rate=0.01, **kwargs):
        super().__init__(learning_rate, **kwargs)


class RMSprop(Optimizer):
    name = "rmsprop"
    defaults = {"rho": 0.9, "momentum": 0.0, "epsilon": 1e-7}


_BY_NAME = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop}


def get(identifier) -> Optimizer:
    """An optimizer object from a name (``"adam"``) or an optimizer object."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise RnnlabError(f"optimizer must be one of {sorted(_BY_NAME)} or an rnnlab.keras.optimizers object, got {identifier!r}")


def from_config(cfg: dict) -> Optimizer:
    cfg = dict(cfg)
    cls = {c.__name__: c for c in _BY_NAME.values()}[cfg.pop("class_name")]
    return cls(**cfg)
