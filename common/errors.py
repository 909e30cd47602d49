"""The one base class of every openpose-train exception (docs/architecture.md §Errors).

An :class:`OpenPoseTrainError` is bad input or an unusable environment, with a message that names
the file, record, field or layer: the command line prints it as one ``Error: ...`` line. Any other
exception is a bug and keeps its traceback. Project classes keep a builtin base beside this one
where callers catch the builtin (``class LmdbReadError(OpenPoseTrainError, OSError)``)."""


class OpenPoseTrainError(Exception):
    """Bad input or an unusable environment; the message is the whole story for the user."""
