"""``harness data prepare`` and ``harness data subset``: put benchmark data where the loaders look, checked.

- ``prepare --bench NAME [--from PATH] [--split S]``: VLMEvalKit benchmarks: reads the TSV (``--from``, else
  ``$LMUData/NAME.tsv``), checks it the way the loader will (columns, integer unique indexes, image
  references, every image decodes, the benchmark's own structure: MMBench rotation groups, MMVP pairs,
  POPE Yes/No, ...), compares its md5 with the one VLMEvalKit registers for that name, and copies it to
  ``$LMUData/NAME.tsv`` (atomically). A file whose md5 differs is not placed under the official name
  (VLMEvalKit itself would replace it by a download) unless ``--force``. M3CoT: checks a ``datasets``
  folder or parquet/jsonl files and prints the ``--data`` to pass (M3CoT has no default location).
- ``subset --bench NAME --n N [--seed S]``: a deterministic subset of N units stratified by category
  (the benchmark's units: MMBench rotation groups, MMVP pairs, others rows), written as
  ``$LMUData/NAME_harness_nN_sS.tsv``: a name VLMEvalKit never downloads, read by the harness with the
  official name's scoring. Rows whose image referred to a dropped row get the image inline.

The work is :mod:`harness.data.prepare` and :mod:`harness.data.subset`; this module is the argparse layer.
Their imports stay inside the handlers (``harness --help`` stays instant).
"""
from __future__ import annotations


def add_commands(sub) -> None:
    p = sub.add_parser("data", help="prepare benchmark data (check, md5, place) or write stratified subsets")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    q = data_sub.add_parser("prepare", help="check a benchmark's data and place it where the loader expects it")
    q.add_argument("--bench", required=True)
    q.add_argument("--from", dest="source", help="the downloaded file (VLMEvalKit TSV) or M3CoT folder/files")
    q.add_argument("--split", help="the benchmark's split / VLMEvalKit variant (default: its evaluation split)")
    q.add_argument("--force", action="store_true", help="place a TSV whose md5 differs from VLMEvalKit's anyway")
    q.add_argument("--out", help="easyvqa: the datasets folder to write (new or empty)")
    q.set_defaults(handler=cmd_prepare)

    q = data_sub.add_parser("subset", help="write a deterministic category-stratified subset under a private name")
    q.add_argument("--bench", required=True)
    q.add_argument("--n", type=int, required=True, help="units to keep (MMBench: rotation groups; MMVP: pairs)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--data", help="the full TSV (default: $LMUData/NAME.tsv)")
    q.add_argument("--split", help="the benchmark's split / VLMEvalKit variant")
    q.add_argument("--out", help="output TSV (default: $LMUData/NAME_harness_nN_sS.tsv)")
    q.set_defaults(handler=cmd_subset)


def cmd_prepare(args) -> int:
    from harness.data.prepare import prepare

    print(prepare(args.bench, source=args.source, split=args.split, force=args.force, out=args.out))
    return 0


def cmd_subset(args) -> int:
    from harness.data.subset import write_subset

    print(write_subset(args.bench, args.n, seed=args.seed, data=args.data, split=args.split, out=args.out).summary)
    return 0
