"""The one exception type the data pipeline raises for bad input.

Its message always names the offending file, line, field or value, so a CLI can print it as
``error: <message>`` and exit non-zero instead of showing a traceback.
"""


class DataError(ValueError):
    """Bad or inconsistent input data (file, line, key, value named in the message)."""
