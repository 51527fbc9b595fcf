"""The session folder: its schema (columns, phases, statuses), the writer and the reader."""
