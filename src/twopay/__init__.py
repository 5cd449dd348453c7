"""twopay: second-reimbursement batches for trade-union medical mutual aid."""

__version__ = "0.1.0"
