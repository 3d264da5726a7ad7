"""A Keras-compatible facade: a Keras program for these layers runs after changing only its imports.

    from rnnlab.keras.models import Sequential          # was: from tensorflow.keras.models import Sequential
    from rnnlab.keras.layers import LSTM, Dense         # was: from tensorflow.keras.layers import LSTM, Dense

``import rnnlab.keras as keras`` also gives ``keras.Sequential``, ``keras.Input``, ``keras.Model``,
``keras.layers.*``, ``keras.callbacks.*``, ``keras.optimizers.*`` and ``keras.utils.*``.
No logic of its own lives here: layers are rnnlab layers, training is rnnlab's one trainer.
"""
from rnnlab.keras import callbacks, layers, models, optimizers, utils
from rnnlab.keras.layers import Input
from rnnlab.keras.models import Model, Sequential, load_model

__all__ = ["Sequential", "Model", "Input", "load_model", "layers", "models", "callbacks", "optimizers", "utils"]
