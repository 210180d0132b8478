"""Reading and writing labeler's Parquet tables and run records (all I/O lives here and in labeler.logs)."""
