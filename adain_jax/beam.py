"""The dataset job of adain_jax.stylize_dataset as an Apache Beam pipeline, for Dataflow,
Flink, Spark or any other Beam runner (the `beam` extra: pip install "adain-jax[beam]").

    python -m adain_jax.beam --content-dir photos/ --styles bank.safetensors --out DIR \\
        --runner FnApiRunner                         # in this process
    python -m adain_jax.beam --content-dir /nfs/imagenet/train --styles /nfs/bank.safetensors \\
        --out /nfs/sin --resize sin --batch 8 --runner FlinkRunner --flink_master HOST:8081 \\
        --sdk_container_image IMAGE                  # IMAGE: Beam's SDK image + adain-jax

The arguments are stylize_dataset's (less --shard and --distributed: the runner spreads
the chunks), and --share-model; any other goes to Beam's PipelineOptions.

It is the same job: the same chunks, each stylised in the same groups as the command
(stylize_dataset.batches), written by the same functions, so the files are the command's,
byte for byte on the same machine, and either can resume a job the other began. OUT/job.json
is checked the same way; a rerun redoes only the chunks without a record.

    Create(the chunks without a record)
    -> Load: a chunk's contents decoded and resized (stylize_dataset.load_chunk), given out
       as its groups, each a list of keyed examples ((chunk, item), Example(rgb, row));
       the contents that fail to load go aside, to Write
    -> RunInference(KeyedModelHandler(AdainModelHandler).with_no_batching()): one jitted
       call per group. Beam's own batching (BatchElements) would make other batches than
       the command's, and a batch of another size can change the last bit of a result.
    -> Save: each output written (png, jpg) or made into its record (arrayrecord)
    -> GroupByKey(chunk) -> Write: the chunk's records file and OUT/_chunks record
    -> Count -> Merge: manifest.csv and failures.csv, once every chunk has its record.

Files are read and written with Python's and PIL's own calls, not Beam's FileSystems, so
every worker must reach --content-dir, --styles, --weights and --out at the same local
paths: one machine, or a shared file system (NFS; on Dataflow, a container that mounts
Cloud Storage with FUSE); gs:// paths are not understood. The contents' listing travels in
the pipeline (about 100 bytes a content; Dataflow caps the size of a job's graph, which
--experiments=upload_graph lifts). TFDS contents travel without their data source, which
each worker opens again (--data-dir must be readable there).
"""
from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from adain_jax import stylize_dataset as sd
from adain_jax.cli import Parser, run_main, setup_logging

PROG = "python -m adain_jax.beam"

try:
    import apache_beam as beam
    from apache_beam.ml.inference.base import (KeyedModelHandler, ModelHandler,
                                               PredictionResult, RunInference)
    from apache_beam.options.pipeline_options import PipelineOptions
except ImportError as err:
    message = f'needs Apache Beam ({err}): pip install "adain-jax[beam]"'
    if __name__ == "__main__":
        sys.exit(f"{PROG}: error: {message}")
    raise ImportError(f"adain_jax.beam {message}") from None

log = logging.getLogger(__name__)

FAILED = "failed"  # Load's output of the contents that could not be loaded


# ---- The model ---------------------------------------------------------------------------

class Example(NamedTuple):
    """One content for the model: (H, W, 3) float32 pixels in [0, 1] and its style's row."""

    rgb: np.ndarray
    row: int


class Stylizer:
    """What a worker loads: the weights and the bank's statistics."""

    def __init__(self, weights_path: str, bank):
        from adain_jax.weights import load_params

        self.params = load_params(weights_path)
        self.bank = _bank(bank)

    def stylize(self, rgbs: Sequence[np.ndarray], rows: Sequence[int],
                alpha: float) -> np.ndarray:
        """Contents of one shape with their styles: stylize_dataset.stylize_group."""
        return sd.stylize_group(self.params, self.bank, rgbs, rows, alpha)


class AdainModelHandler(ModelHandler[Example, PredictionResult, Stylizer]):
    """RunInference's handler: Examples in, PredictionResults of their stylised pixels
    ((H, W, 3) float32 in [0, 1]) out, at `alpha`.

    `bank`: a bank file, loaded on each worker, or a StyleBank, shipped in the pipeline.
    A batch may mix shapes: each shape is one call, in the order the shapes first come.
    `batch` is the most examples Beam's batching puts in one batch (build_pipeline gives
    whole groups instead). `share_model`: one model per machine, used by all its worker
    processes (Beam's large_model), e.g. for a GPU, which each JAX process would otherwise
    try to take whole.
    """

    def __init__(self, weights_path, bank, alpha: float = 1.0, *, batch: int = 1,
                 share_model: bool = False):
        super().__init__()
        self._weights_path, self._bank, self._alpha = str(weights_path), bank, alpha
        self._batch, self._share_model = batch, share_model

    def load_model(self) -> Stylizer:
        return Stylizer(self._weights_path, self._bank)

    # overridden, not passed to ModelHandler.__init__, whose keywords vary between releases
    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"max_batch_size": self._batch}

    def share_model_across_processes(self) -> bool:
        return self._share_model

    def run_inference(self, batch: Sequence[Example], model: Stylizer,
                      inference_args: dict[str, Any] | None = None
                      ) -> Iterable[PredictionResult]:
        shapes: dict[tuple, list[int]] = {}
        for i, example in enumerate(batch):
            shapes.setdefault(example.rgb.shape, []).append(i)
        outputs = [None] * len(batch)
        for group in shapes.values():
            stylised = model.stylize([batch[i].rgb for i in group],
                                     [batch[i].row for i in group], self._alpha)
            for i, pixels in zip(group, stylised):
                outputs[i] = pixels
        return [PredictionResult(example, pixels) for example, pixels in zip(batch, outputs)]

    def get_num_bytes(self, batch: Sequence[Example]) -> int:
        return sum(example.rgb.nbytes for example in batch)  # not pickled to be counted

    def get_metrics_namespace(self) -> str:
        return "adain_jax"


@functools.lru_cache(maxsize=4)
def _load_bank(path: str, mtime_ns: int):
    """The bank at `path`, once per process (`mtime_ns` in the key: a new file is read)."""
    from adain_jax import style_bank

    return style_bank.load_bank(path)


def _bank(bank):
    """A StyleBank as it is; a bank file loaded once per process, for all its steps."""
    if isinstance(bank, (str, os.PathLike)):
        return _load_bank(str(bank), os.stat(bank).st_mtime_ns)
    return bank


# ---- The pipeline ------------------------------------------------------------------------

class _Load(beam.DoFn):
    """chunk -> its groups of keyed Examples; its failures to FAILED as (chunk, Done)."""

    def __init__(self, contents, bank, out: Path, settings: sd.Settings):
        self._contents, self._bank, self._out, self._settings = contents, bank, out, settings

    def setup(self):
        self._row_of = sd.assigner(self._contents, _bank(self._bank), self._settings)

    def process(self, chunk: int):
        failed = []
        loaded = sd.load_chunk(self._contents, self._settings, self._out, chunk, failed.append)
        for group in sd.batches(loaded, self._settings.batch):
            yield [((chunk, item._replace(rgb=None)), Example(item.rgb, self._row_of(item)))
                   for item in group]
        for item in failed:
            yield beam.pvalue.TaggedOutput(FAILED, (chunk, sd.Done(item, None, None)))


class _Save(beam.DoFn):
    """((chunk, item), PredictionResult) -> (chunk, Done), its output written or encoded."""

    def __init__(self, bank, out: Path, settings: sd.Settings):
        self._bank, self._out, self._settings = bank, out, settings

    def process(self, element):
        (chunk, item), result = element
        row = result.example.row
        record = sd.save_output(self._out, self._settings, _bank(self._bank), item, row,
                                result.inference)
        yield chunk, sd.Done(item, row, record)


class _Write(beam.DoFn):
    """(chunk, its Dones) -> chunk, once its records file and record are written."""

    def __init__(self, bank, out: Path, settings: sd.Settings, weights_sha256: str,
                 n_contents: int):
        self._bank, self._out, self._settings = bank, out, settings
        self._weights_sha256, self._n_contents = weights_sha256, n_contents

    def process(self, element):
        chunk, done = element
        done = sorted(done, key=lambda d: d.item.position)
        positions = sd.chunk_positions(self._n_contents, self._settings, chunk)
        assert [d.item.position for d in done] == list(positions), chunk
        sd.write_chunk(self._out, chunk, self._settings, _bank(self._bank),
                       self._weights_sha256, done)
        yield chunk


def _merge(chunks_written: int, out: Path, n_chunks: int) -> bool:
    merged = sd.merge_if_done(out, n_chunks)
    log.info("%s: %d chunks written%s", out, chunks_written,
             "; manifest.csv written" if merged else "")
    return merged


def build_pipeline(p: beam.Pipeline, weights_path, bank, contents, out: Path,
                   settings: sd.Settings = sd.Settings(), *,
                   share_model: bool = False) -> beam.PCollection:
    """Add the job to `p`: the chunks of `contents` (stylize_dataset's FolderContents or
    TfdsContents) that have no record in `out` yet, then the manifest. `bank`: a bank file
    (loaded by each worker) or a StyleBank (shipped in the pipeline). OUT/job.json is the
    caller's to check first (stylize_dataset.start_job). Returns the manifest step's
    output: one bool, whether every chunk was done."""
    from adain_jax.download import sha256_file

    out = Path(out)
    n_chunks = math.ceil(len(contents) / settings.chunk)
    todo = [c for c in range(n_chunks) if not sd.chunk_record(out, c).exists()]
    handler = KeyedModelHandler(AdainModelHandler(
        weights_path, bank, settings.alpha, batch=settings.batch, share_model=share_model))
    loaded = (p
              | "Chunks" >> beam.Create(todo)
              | "Load" >> beam.ParDo(_Load(contents, bank, out, settings)).with_outputs(
                  FAILED, main="groups"))
    saved = (loaded.groups
             | "Stylize" >> RunInference(handler.with_no_batching())
             | "Save" >> beam.ParDo(_Save(bank, out, settings)))
    written = ((saved, loaded[FAILED])
               | "Flatten" >> beam.Flatten()
               | "ByChunk" >> beam.GroupByKey()
               | "Write" >> beam.ParDo(_Write(bank, out, settings, sha256_file(weights_path),
                                              len(contents))))
    return (written
            | "Count" >> beam.combiners.Count.Globally()
            | "Merge" >> beam.Map(_merge, out, n_chunks))


# ---- Command line ------------------------------------------------------------------------

EPILOG = f"""\
examples:
  {PROG} --content-dir photos/ --styles bank.safetensors --out stylized/ \\
      --runner FnApiRunner
  {PROG} --content-dir /nfs/imagenet/train --styles /nfs/bank.safetensors \\
      --out /nfs/sin/ --resize sin --runner FlinkRunner --flink_master HOST:8081 \\
      --sdk_container_image IMAGE

the job: as python -m adain_jax.stylize_dataset (see its --help and the module docstring
  of adain_jax.beam), the same files; a rerun redoes the chunks without a record.
runners: any other argument goes to Beam's PipelineOptions (--runner, --project, ...).
  Beam's DirectRunner first tries Prism, which it downloads; --runner FnApiRunner is its
  in-process engine. Every worker must reach the paths given here at the same place (one
  machine or a shared file system; not gs://), and have adain-jax installed (IMAGE).
exit status: 0 when every content was stylised; 2 when some could not be (listed in
  failures.csv); 1 on a usage error or a job with other settings in --out.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, epilog=EPILOG, allow_abbrev=False,  # Beam's flags pass by
                    description="The dataset job of adain_jax.stylize_dataset as an Apache "
                                "Beam pipeline (RunInference), for Dataflow, Flink, Spark.")
    sd.add_job_flags(parser, shards=False)
    parser.add_argument("--share-model", action="store_true",
                        help="one model per worker machine, shared by its processes (for "
                             "GPU workers)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    setup_logging(args.quiet, args.verbose)
    settings = sd.job_settings(parser, args)
    out, styles = Path(args.out), Path(args.styles)
    from adain_jax import outputs, style_bank
    from adain_jax.weights import WeightsError

    try:
        problem = outputs.folder_problem(out)
        if problem:
            raise sd.JobError(f"--out {out}: {problem}")
        # Loads the weights here too: a bad file is one line, not a failed pipeline.
        job = sd.prepare_job(args, out, styles, settings)
        began = time.perf_counter()
        with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
            build_pipeline(p, job.weights_path, sd.bank_file(styles, out), job.contents, out,
                           settings, share_model=args.share_model)
        images, failures = sd.tally(out, range(math.ceil(len(job.contents) / settings.chunk)))
    except (sd.JobError, WeightsError, style_bank.BankError, OSError) as err:
        message = err.strerror if isinstance(err, OSError) and err.strerror else err
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    log.info("%s: %d images in %.1f s; manifest.csv written", out, images,
             time.perf_counter() - began)
    if failures:
        print(f"{PROG}: {len(failures)} contents could not be stylised (see "
              f"{out / 'failures.csv'})", file=sys.stderr)
        return 2
    return 0


def run() -> int:
    return run_main(main, PROG)


if __name__ == "__main__":
    sys.exit(run())
