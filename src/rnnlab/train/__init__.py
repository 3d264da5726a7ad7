"""Training: the one loop (:class:`Trainer`), losses, metrics, optimizers, callbacks, checkpoints."""
from rnnlab.train.callbacks import (Callback, CosineDecay, CSVLogger, EarlyStopping, History, LearningRateScheduler,
                                    ModelCheckpoint, ReduceLROnPlateau, TensorBoard, TerminateOnNaN, TimeLimit)
from rnnlab.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rnnlab.train.losses import LOSSES, get_loss
from rnnlab.train.trainer import Trainer, seed_everything

__all__ = [
    "Trainer", "seed_everything", "History", "Callback", "CosineDecay", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau",
    "LearningRateScheduler", "CSVLogger", "TerminateOnNaN", "TimeLimit", "TensorBoard", "CheckpointError", "load_checkpoint",
    "save_checkpoint", "LOSSES", "get_loss",
]
