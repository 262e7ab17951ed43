"""hpcasync: asynchronous decentralized SGD on MPI one-sided RMA and in a discrete-event simulator."""

__version__ = "0.1.0"
