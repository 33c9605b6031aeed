"""Background roles that run as their own processes in distributed mode (``flare worker ...``)."""
