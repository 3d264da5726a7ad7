"""Keras callbacks (the trainer's own classes, under their Keras names)."""
from rnnlab.train.callbacks import (Callback, CSVLogger, EarlyStopping, History, LearningRateScheduler,
                                    ModelCheckpoint, ReduceLROnPlateau, TensorBoard, TerminateOnNaN)

__all__ = ["Callback", "CSVLogger", "EarlyStopping", "History", "LearningRateScheduler", "ModelCheckpoint",
           "ReduceLROnPlateau", "TerminateOnNaN", "TensorBoard"]
