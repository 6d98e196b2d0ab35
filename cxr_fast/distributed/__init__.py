"""Distribution: which devices a run uses and how workers cooperate.

Owns the tf.distribute strategy, precision and XLA choice per device and who writes outputs
(`strategy`), the local multi-worker launcher (`cluster`) and the tf.data service servers
(`service`).  Imports only the top-level utilities; training and the data pipeline call it,
never the reverse.
"""
