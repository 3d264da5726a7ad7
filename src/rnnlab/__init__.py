"""rnnlab: recurrent neural networks from their equations, for machine learning and neuroscience.

    import rnnlab
    lstm = rnnlab.LSTM(input_size=8, hidden_size=32, num_layers=2)   # drop-in for torch.nn.LSTM
    out, (h_n, c_n) = lstm(x)                                         # x: (batch, time, 8)
"""
from rnnlab.cells import CTRNNCell, GRUCell, LSTMCell, RNNCell
from rnnlab.errors import RnnlabError
from rnnlab.layers import CTRNN, GRU, LSTM, RNN
from rnnlab.minrnn import MinGRU, MinLSTM

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "CTRNN", "RNNCell", "LSTMCell", "GRUCell", "CTRNNCell", "MinGRU", "MinLSTM", "RnnlabError", "__version__"]
