"""The one base class of every openpose-train exception (docs/architecture.md §Errors).

An :class:`OpenPoseTrainError` is bad input or an unusable environment, with a message that names
the file, record, field or layer: the command line prints it as one ``Error: ...`` line. Any other
exception is a bug and keeps its traceback. Project classes keep a builtin base beside this one
where callers catch the builtin (``class LmdbReadError(OpenPoseTrainError, OSError)``)."""
import functools
from typing import Callable


class OpenPoseTrainError(Exception):
    """Bad input or an unusable environment; the message is the whole story for the user."""

    def __str__(self):      # the message as given: a class that is also a KeyError would quote it
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


def reports_errors(command: Callable) -> Callable:
    """Decorate a command's function (below its click decorators): an :class:`OpenPoseTrainError`
    ends the command with click's one line ``Error: <message>`` and exit status 1; any other
    exception is a bug and passes on with its traceback (docs/architecture.md §Errors)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except OpenPoseTrainError as exc:
            import click    # imported here: common loads on the standard library alone

            raise click.ClickException(str(exc)) from None
    run.reports_errors = True
    return run
