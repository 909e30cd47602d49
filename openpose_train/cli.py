"""The ``openpose-train`` command: one click group, subcommands registered by each package.

Each package exposes ``COMMANDS`` (a list of click commands) in its own ``cli`` module; they are
imported lazily so that ``openpose-train models`` does not pay for torch start-up.
"""
import importlib
import sys

import click

from openpose_train.common.errors import OpenPoseTrainError

BUG_NOTE = ("openpose-train: this is a bug, not a problem with your input; please report it with the "
            "command and the traceback below")

# (subcommand name, module, attribute). One place lists every subcommand.
SUBCOMMANDS = [
    ("models", "openpose_train.generator.models_cli", "models"),
    ("prototxt", "openpose_train.generator.cli", "prototxt"),
    ("fork-check", "openpose_train.generator.fork_check", "fork_check"),
    ("synth", "openpose_train.dataset_tools.cli", "synth"),
    ("lmdb", "openpose_train.dataset_tools.cli", "lmdb"),
    ("inspect", "openpose_train.dataset_tools.cli", "inspect"),
    ("train", "openpose_train.training.cli", "train"),
    ("time", "openpose_train.training.time_cli", "time_cmd"),
    ("export", "openpose_train.training.export_cli", "export"),
    ("vgg", "openpose_train.training.vgg", "vgg_cmd"),
    ("mobilenet", "openpose_train.training.mobilenet", "mobilenet_cmd"),
    ("validate", "openpose_train.validation.cli", "validate"),
    ("validate-snapshots", "openpose_train.validation.cli", "validate_snapshots"),
    ("plot", "openpose_train.validation.cli", "plot"),
]


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name, _, _ in SUBCOMMANDS]

    def get_command(self, ctx, cmd_name):
        for name, module, attr in SUBCOMMANDS:
            if name == cmd_name:
                try:
                    mod = importlib.import_module(module)
                    return getattr(mod, attr)
                except (ImportError, AttributeError) as exc:
                    @click.command(name=name, help=f"(unavailable: {exc})")
                    def unavailable():
                        raise click.ClickException(f"'{name}' is not available: {exc}")
                    return unavailable
        return None

    def invoke(self, ctx):
        """Every command reports bad input as one ``Error:`` line (common.errors.reports_errors);
        anything else escaping a command is a bug: say so above its traceback
        (docs/architecture.md §Errors)."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                OpenPoseTrainError, KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            click.echo(BUG_NOTE, err=True)
            raise


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="openpose-train")
def main():
    """Train OpenPose models: data -> LMDB -> prototxt -> training -> export -> COCO AP."""


if __name__ == "__main__":
    sys.exit(main())
