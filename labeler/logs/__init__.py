"""Road-test log readers and writers into the common frame model (:class:`labeler.logs.frame.Frame`)."""
