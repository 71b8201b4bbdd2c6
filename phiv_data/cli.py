"""``phiv-data``: thin command-line front end. Parse, call the library, print.

Each command lives in the library; this module only wires options to it. Errors derived
from ``PhivError`` (and plain file-system errors) print one line and exit non-zero: 1 for
bad data, 2 for a usage error. ``PHIV_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import contextvars
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from phiv_data.convert import prompts
from phiv_data.errors import PhivError

if TYPE_CHECKING:  # recent typer vendors click, so click may not be installed
    import click


_INVOKED_ARGV: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "phiv_invoked_argv", default=None)


class ErrorReportingGroup(TyperGroup):
    """A click group that turns user-facing errors into one line and an exit code."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        if parent is None:
            _INVOKED_ARGV.set(list(args))
        return super().make_context(info_name, args, parent=parent, **extra)

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


def command_line(program: str = "phiv-data") -> str:
    """The command line being run, shell-quoted so it can be pasted back (for manifests)."""
    argv = _INVOKED_ARGV.get()
    return shlex.join([program, *(sys.argv[1:] if argv is None else argv)])


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


def _print_interop_reports(reports: list[Any], max_issues: int) -> None:
    shown = 0
    for report in reports:
        for issue in report.issues:
            if shown < max_issues:
                typer.echo(str(issue), err=True)
            shown += 1
    if shown > max_issues:
        typer.echo(f"... {shown - max_issues} more problem(s) in the *-report.json files",
                   err=True)
    for report in reports:
        typer.echo(report.summary())
        for note in report.notes:
            typer.echo(f"  note: {note}")
        for output in report.outputs:
            typer.echo(f"  wrote {output}")


FormatArgument = Annotated[str, typer.Argument(
    metavar="FORMAT", help="llava (LLaVA JSON), sharegpt (ShareGPT / LLaMA-Factory JSON) or "
                           "hf (Hugging Face datasets: parquet or save_to_disk).")]
StrictOption = Annotated[bool, typer.Option(
    "--strict", help="Fail, writing nothing, when any row is left out or changed (by default "
                     "such rows are reported, counted and kept in a *-rejected.ndjson file).")]
MaxErrorsOption = Annotated[int, typer.Option(help="Print at most this many row problems.")]


@app.command("import")
def import_command(
    format_name: FormatArgument,
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="Files to import.")],
    out: Annotated[Path, typer.Option(help="Output folder for the phiv shards and manifest.")],
    images_root: Annotated[Path | None, typer.Option(
        help="Folder the image paths are relative to (default: each input file's folder).")]
    = None,
    strict: StrictOption = False,
    max_errors: MaxErrorsOption = 50,
) -> None:
    """Import LLaVA, ShareGPT/LLaMA-Factory or Hugging Face data as phiv shards.

    Writes OUT/<stem>.jsonl per input and OUT/manifest.json; then run `phiv-data validate`.
    """
    from phiv_data.interop import import_files

    _print_interop_reports(import_files(format_name, files, out, images_root=images_root,
                                        strict=strict), max_errors)


@app.command("export")
def export_command(
    format_name: FormatArgument,
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="phiv shards.")],
    out: Annotated[Path, typer.Option(help="Output folder: one data file per input.")],
    images_root: Annotated[Path | None, typer.Option(
        help="The shards' images root (default: from the manifest, else images/ beside "
             "each file).")] = None,
    images: Annotated[str, typer.Option(
        help="link: hard-link images into OUT (copy where linking fails); copy; none: "
             "write their paths only (relative to the images root). hf always embeds them.")]
    = "link",
    hf_layout: Annotated[str, typer.Option(
        help="hf only: parquet (OUT/<stem>.parquet) or disk (save_to_disk into OUT/<stem>/).")]
    = "parquet",
    strict: StrictOption = False,
    max_errors: MaxErrorsOption = 50,
) -> None:
    """Export phiv shards to LLaVA, ShareGPT/LLaMA-Factory or Hugging Face data."""
    from phiv_data.interop import ExportOptions, export_files

    options = ExportOptions(images=images, hf_layout=hf_layout)
    _print_interop_reports(export_files(format_name, files, out, images_root=images_root,
                                        options=options, strict=strict), max_errors)


# --- phiv-data convert docvqa | nlvr2 | hateful-memes ---------------------------------------

NativeSrcOption = Annotated[Path, typer.Option(
    "--src", help="The dataset folder as distributed (annotation files under their native "
                  "names, images beside them); every split found is converted.")]
NativeOutOption = Annotated[Path, typer.Option(
    "--out", help="Output folder: <dataset>_<split>.jsonl, images/ and manifest.json. Rerun "
                  "the same command into it to resume.")]
NativeWorkersOption = Annotated[int | None, typer.Option(
    "--workers", min=1, help="Worker processes (default: every usable core).")]
NativeStrictOption = Annotated[bool, typer.Option(
    "--strict", help="Fail at the first row that cannot be converted (missing or unreadable "
                     "image, bad row); by default such rows are reported and counted.")]
NativeLinkOption = Annotated[bool, typer.Option(
    "--link", help="Hard-link images into OUT/images instead of copying them (falls back to "
                   "a copy across filesystems).")]
NativeShardsOption = Annotated[int, typer.Option(
    "--num-shards", min=1, help="Fan out: split the work into this many parts...")]
NativeIndexOption = Annotated[int, typer.Option(
    "--shard-index", min=0, help="...and convert this one (0-based); join the parts after.")]
NativeCheckOption = Annotated[str, typer.Option(
    "--check-images", help="How each image is checked before it is written: decode (every "
                           "pixel, as `phiv-data validate --check-images decode`) or verify "
                           "(PNG chunk checksums without inflating, much faster on big pages).")]
NativeProgressOption = Annotated[bool | None, typer.Option(
    "--progress/--no-progress", help="Progress on stderr (default: on runs over 2 s).")]


def _prompt_option(field: str, default: str) -> Any:
    return typer.Option("--prompt-template", help=(
        f"The user text, with the field {{{field}}} (default: {default!r}). Images are "
        "placed before it automatically."))


def _convert_native(dataset: str, src: Path, out: Path, prompt_template: str | None,
                    link: bool, check_images: str, workers: int | None, strict: bool,
                    num_shards: int, shard_index: int, progress: bool | None) -> None:
    import importlib

    from phiv_data.convert import CONVERTERS
    from phiv_data.convert.framework import RunOptions

    module = importlib.import_module(CONVERTERS[dataset])
    chosen: dict[str, Any] = {"link": link, "check": check_images}
    if prompt_template is not None:
        chosen["prompt"] = prompt_template
    options = module.Options(**chosen)
    run = RunOptions(workers=workers, strict=strict, num_shards=num_shards,
                     shard_index=shard_index, progress=progress,
                     command=command_line())
    typer.echo(module.convert(src, out, options, run).summary())


@convert_app.command("docvqa")
def convert_docvqa_command(
    src: NativeSrcOption, out: NativeOutOption,
    prompt_template: Annotated[str | None, _prompt_option("question", prompts.DOCVQA_PROMPT)] = None,
    link: NativeLinkOption = False, check_images: NativeCheckOption = "decode",
    workers: NativeWorkersOption = None,
    strict: NativeStrictOption = False, num_shards: NativeShardsOption = 1,
    shard_index: NativeIndexOption = 0, progress: NativeProgressOption = None,
) -> None:
    """DocVQA ({train,val,test}_v1.0[_withQT].json + documents/, or parquet copies).

    One record per question: the page, the question, the first answer (all answers in
    meta); test questions (no answers) become unlabeled evaluation records.
    """
    _convert_native("docvqa", src, out, prompt_template, link, check_images, workers, strict,
                    num_shards, shard_index, progress)


@convert_app.command("nlvr2")
def convert_nlvr2_command(
    src: NativeSrcOption, out: NativeOutOption,
    prompt_template: Annotated[str | None, _prompt_option("sentence", prompts.NLVR2_PROMPT)] = None,
    link: NativeLinkOption = False, check_images: NativeCheckOption = "decode",
    workers: NativeWorkersOption = None,
    strict: NativeStrictOption = False, num_shards: NativeShardsOption = 1,
    shard_index: NativeIndexOption = 0, progress: NativeProgressOption = None,
) -> None:
    """NLVR2 ({train,dev,test1,test2}.json + images/<split>/, or parquet copies).

    One record per sentence: left and right image, the sentence, "True" or "False".
    """
    _convert_native("nlvr2", src, out, prompt_template, link, check_images, workers, strict,
                    num_shards, shard_index, progress)


@convert_app.command("hateful-memes")
def convert_hateful_memes_command(
    src: NativeSrcOption, out: NativeOutOption,
    prompt_template: Annotated[str | None, _prompt_option("text", prompts.HATEFUL_MEMES_PROMPT)] = None,
    link: NativeLinkOption = False, check_images: NativeCheckOption = "decode",
    workers: NativeWorkersOption = None,
    strict: NativeStrictOption = False, num_shards: NativeShardsOption = 1,
    shard_index: NativeIndexOption = 0, progress: NativeProgressOption = None,
) -> None:
    """Hateful Memes (train/dev_seen/dev_unseen/test_seen/test_unseen.jsonl + img/).

    One record per meme: the image, its text unchanged in the prompt, "yes" (hateful) or
    "no"; rows without a label become unlabeled evaluation records.
    """
    _convert_native("hateful-memes", src, out, prompt_template, link, check_images, workers,
                    strict, num_shards, shard_index, progress)


# --- phiv-data convert ucf101 | join | demo -------------------------------------------------


@convert_app.command("ucf101")
def convert_ucf101_command(
    src: Annotated[Path, typer.Option("--src", help="UCF-101 videos: the recipe's subset "
                                      "(train/val/test/<Class>/*.avi) or the official release "
                                      "(<Class>/*.avi + ucfTrainTestlist/); detected.")],
    out: NativeOutOption,
    frames: Annotated[int, typer.Option(min=1, help="Frames sampled per video.")] = 8,
    sampling: Annotated[str, typer.Option(help="uniform: floor(k*T/N), the recipe's; center: "
                                          "the middle frame of N equal segments.")] = "uniform",
    backend: Annotated[str, typer.Option(help="auto, pyav, opencv or decord (same frames).")
                       ] = "auto",
    max_side: Annotated[int | None, typer.Option(min=1, help="Shrink frames whose longer side "
                                                 "exceeds this (default: original size).")] = None,
    jpeg_quality: Annotated[int, typer.Option(min=1, max=95, help="JPEG quality (75 is the "
                                              "recipe's).")] = 75,
    classes: Annotated[str | None, typer.Option(help="Comma-separated classes to keep (the "
                                                "prompt lists only them).")] = None,
    fold: Annotated[int, typer.Option(min=1, max=3, help="Official layout: split list 1-3.")] = 1,
    val_groups: Annotated[int, typer.Option(min=0, help="Official layout: the highest N train "
                                            "groups become val (whole groups).")] = 2,
    short_videos: Annotated[str, typer.Option(help="Videos with fewer than --frames frames: "
                                              "repeat frames, or skip them.")] = "repeat",
    prompt_template: Annotated[str | None, _prompt_option("classes", prompts.UCF101_PROMPT)
                               ] = None,
    workers: NativeWorkersOption = None, strict: NativeStrictOption = False,
    num_shards: NativeShardsOption = 1, shard_index: NativeIndexOption = 0,
    progress: NativeProgressOption = None,
) -> None:
    """UCF-101 videos -> 8 sampled JPEG frames per video and one record each (resumable).

    Writes OUT/images/{split}/{Class}/{stem}.{k}.jpg, OUT/ucf101_{split}.jsonl and
    OUT/manifest.json; unreadable videos are reported and skipped.
    """
    from phiv_data.convert import ucf101
    from phiv_data.convert.framework import RunOptions

    options = ucf101.Options(
        frames=frames, sampling=sampling, backend=backend, max_side=max_side,
        jpeg_quality=jpeg_quality, fold=fold, val_groups=val_groups, short_videos=short_videos,
        classes=tuple(name.strip() for name in classes.split(",") if name.strip())
        if classes else None,
        prompt_template=prompt_template or prompts.UCF101_PROMPT)
    plan = ucf101.build_plan(src, options)
    for note in plan.notes:
        typer.echo(f"ucf101: {note}", err=True)
    run = RunOptions(workers=workers, strict=strict, num_shards=num_shards,
                     shard_index=shard_index, progress=progress,
                     command=command_line())
    typer.echo(ucf101.convert(src, out, run=run, plan=plan).summary(notes=False))


@app.command("preview")
def preview_command(
    file: Annotated[Path, typer.Argument(help="A phiv JSONL shard.")],
    out: Annotated[Path, typer.Option(help="The HTML file to write (self-contained).")],
    images_root: Annotated[Path | None, typer.Option(
        help="Folder image paths are relative to (default: the manifest's, else images/ "
             "beside FILE).")] = None,
    sample: Annotated[int, typer.Option(help="Records shown (all when there are fewer).")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the random sample.")] = 0,
    measure: Annotated[int, typer.Option(
        help="Records whose image headers are read for the size and token plots.")] = 1000,
    num_crops: Annotated[int, typer.Option(help="Phi-3.5-vision num_crops for image "
                                                "tokens.")] = 4,
    max_length: Annotated[int | None, typer.Option(
        help="Token budget: drawn on the token plot and checked for the shown records.")]
    = None,
    tokenizer: Annotated[Path | None, typer.Option(
        help="Folder with tokenizer.json for exact text token counts (else estimated).")]
    = None,
    check_images: Annotated[str, typer.Option(
        help="Checks of the shown records' images: exists or decode.")] = "decode",
    validate: Annotated[bool, typer.Option(
        "--validate/--no-validate", help="Show the validation issues of the shown records.")]
    = True,
) -> None:
    """Write one self-contained HTML page: sampled records with their images and issues,
    and plots of the whole dataset."""
    from phiv_data.preview import PreviewOptions, build_preview

    result = build_preview(file, out, PreviewOptions(
        images_root=images_root, sample=sample, seed=seed, measure=measure,
        num_crops=num_crops, max_length=max_length, tokenizer=tokenizer,
        check_images=check_images, validate=validate))
    for note in result.notes:
        typer.echo(f"  {note}")
    typer.echo(f"wrote {result.out}: {result.shown} records, {result.embedded_images} images, "
               f"{result.issues} issues shown")


@app.command("join")
def join_command(
    parts: Annotated[list[Path], typer.Argument(help="The part directories written with "
                                                "--num-shards K --shard-index i.")],
    out: Annotated[Path, typer.Option("--out", help="The joined dataset directory.")],
    mode: Annotated[str, typer.Option(help="link: hard-link images (copy across filesystems); "
                                      "copy; move: take them out of the parts.")] = "link",
) -> None:
    """Join the parts of a fanned-out conversion into one dataset with one manifest."""
    from phiv_data.convert.join import join_parts

    report = join_parts(parts, out, mode=mode, command=command_line())
    typer.echo(report.summary(notes=False))


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Where to build the demo.")
                   ] = Path("phiv-demo"),
    workers: NativeWorkersOption = None,
) -> None:
    """Build a small UCF-101-style tree of synthetic videos, convert it, validate it."""
    from phiv_data.demo import run_demo

    run_demo(out, workers=workers, echo=typer.echo)


@app.command("validate")
def validate_command(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="JSONL files, or directories whose *.jsonl files are validated.")] = None,
    images_root: Annotated[Path | None, typer.Option(
        help="Directory image paths are relative to [default: the manifest's, else "
             "images/ beside each file].")] = None,
    check_images: Annotated[str, typer.Option(
        help="none: path syntax only; exists: files exist inside the root; decode: also "
             "decode and inspect every image.")] = "exists",
    max_length: Annotated[int | None, typer.Option(
        min=1, help="Token budget per record; enables the token checks.")] = None,
    num_crops: Annotated[int, typer.Option(min=1, help="Phi-3.5-vision num_crops for "
                                                       "image token counts.")] = 4,
    tokenizer: Annotated[Path | None, typer.Option(
        help="Local tokenizer folder (tokenizer.json) for exact text token counts; "
             "estimated without it.")] = None,
    strict: Annotated[bool, typer.Option(help="Fail on warnings too.")] = False,
    max_errors: Annotated[int, typer.Option(min=0, help="Problems printed in text "
                                                        "output.")] = 50,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes [default: every "
                                                            "core].")] = None,
    output_format: Annotated[str, typer.Option(
        "--format", help="text: problems and a summary; json: every issue.")] = "text",
    manifest: Annotated[bool, typer.Option(
        help="Record the outcome in the manifest.json of each file's directory.")] = True,
    max_line_bytes: Annotated[int, typer.Option(min=1024, help="Longer lines are "
                                                               "errors.")] = 1 << 20,
    codes: Annotated[bool, typer.Option("--codes", help="List the issue codes and "
                                                        "exit.")] = False,
) -> None:
    """Check JSONL files: syntax, schema, ids, image paths and files, media, token budget.

    Exit status: 0 valid, 1 invalid, 2 usage error.
    """
    from phiv_data.errors import UsageError
    from phiv_data.validate import ValidationOptions, record_validation, validate_paths
    from phiv_data.validate.report import describe_codes

    if codes:
        typer.echo(describe_codes())
        return
    if output_format not in ("text", "json"):
        raise UsageError(f"--format must be text or json, not {output_format!r}")
    options = ValidationOptions(
        images_root=images_root, check_images=check_images,  # type: ignore[arg-type]
        max_length=max_length, num_crops=num_crops, tokenizer=tokenizer, strict=strict,
        workers=workers, max_line_bytes=max_line_bytes)
    report = validate_paths(list(paths or []), options)
    if output_format == "json":
        import orjson

        sys.stdout.buffer.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
        sys.stdout.buffer.write(b"\n")
    else:
        typer.echo(report.render_text(max_errors), nl=False)
    if manifest:
        try:
            for written in record_validation(report):
                typer.echo(f"recorded in {written}", err=True)
        except OSError as error:
            typer.echo(f"note: could not record the validation: {error}", err=True)
    raise typer.Exit(0 if report.ok else 1)


def invoked_only(full: typer.Typer, args: list[str]) -> typer.Typer:
    """``full`` with only the command or group that ``args`` invokes, when it names one.

    typer builds every registered command's parameters from its signature at each start
    (about 20 ms for phiv-data's commands) though only one runs. Help, unknown names and
    no arguments get the full app, so their output is unchanged. A callback keeps the
    result a group: with a single command typer would drop the command's name.
    """
    name = args[0] if args else None
    commands = [info for info in full.registered_commands if info.name == name]
    groups = [info for info in full.registered_groups if info.name == name]
    if len(commands) + len(groups) != 1:
        return full
    narrowed = make_app(full.info.help)  # type: ignore[arg-type]
    narrowed.registered_commands = commands
    narrowed.registered_groups = groups
    narrowed.callback()(_no_options)
    return narrowed


def _no_options() -> None:
    """The narrowed app's callback: no options of its own (as the full app has none)."""


def main() -> None:
    """Console-script entry point."""
    invoked_only(app, sys.argv[1:])(prog_name="phiv-data")


if __name__ == "__main__":
    main()
