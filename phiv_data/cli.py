"""``phiv-data``: thin command-line front end. Parse, call the library, print.

Each command lives in the library; this module only wires options to it. Errors derived
from ``PhivError`` (and plain file-system errors) print one line and exit non-zero: 1 for
bad data, 2 for a usage error. ``PHIV_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from phiv_data.errors import PhivError


class ErrorReportingGroup(TyperGroup):
    """A click group that turns user-facing errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PhivError as error:
            if os.environ.get("PHIV_DEBUG"):
                raise
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.exit_code) from None
        except OSError as error:
            if os.environ.get("PHIV_DEBUG"):
                raise
            where = f"{error.filename}: " if getattr(error, "filename", None) else ""
            typer.echo(f"error: {where}{error.strerror or error}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None


def make_app(help_text: str) -> typer.Typer:
    """A Typer app with phiv's error handling and no rich tracebacks."""
    return typer.Typer(
        cls=ErrorReportingGroup,
        help=help_text,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


app = make_app("Prepare, validate and inspect Phi-3.5-vision training data.")
convert_app = make_app("Convert a public dataset from its native files into phiv shards.")
app.add_typer(convert_app, name="convert")


@app.command("schema")
def schema_command(
    out: Annotated[Path | None, typer.Option(help="Write the JSON Schema files into this "
                                                  "directory instead of printing the record schema.")] = None,
) -> None:
    """Print the JSON Schema of a record (or write every schema file with --out)."""
    from phiv_data.jsonschema import render, schema_documents, write_schemas

    if out is not None:
        for path in write_schemas(out):
            typer.echo(str(path))
        return
    sys.stdout.buffer.write(render(schema_documents()["record.schema.json"]))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="phiv-data")


if __name__ == "__main__":
    main()
