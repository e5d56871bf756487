"""A Vertex AI tuning job's best trial as best_params.json, for walsmf.task --params_file.

    gcloud ai hp-tuning-jobs describe JOB_ID --region $REGION --format json \\
        | python -m walsmf.best_trial --output best_params.json

Of the job's succeeded trials, the one with the highest final
``recall_at_10`` (what each trial reports, cloud/vertex_hptuning.yaml); its
parameters become {walsmf.task flag: value}, with ``exclude_seen`` as the
trials were scored (unread articles only).
"""
import json
import os
import sys

from walsmf import flags, settings
from walsmf.errors import DataError, json_object, run_cli
from walsmf.fileio import atomic_write_text, check_writable, starts_with
from walsmf.metrics import HPTUNING_TAG

SUCCEEDED = "SUCCEEDED"


def best_params(job: dict, metric: str = HPTUNING_TAG) -> dict:
    """{walsmf.task flag: value} of the succeeded trial of ``job`` (a HyperparameterTuningJob as gcloud describes
    it) with the highest final ``metric``; the trial's id under ``trial``."""
    scored = []
    for trial in job.get("trials") or []:
        values = [m.get("value") for m in (trial.get("finalMeasurement") or {}).get("metrics") or []
                  if m.get("metricId") == metric]
        if trial.get("state") == SUCCEEDED and values and isinstance(values[0], (int, float)):
            scored.append((values[0], trial))
    if not scored:
        raise DataError("the tuning job {} has no succeeded trial reporting {} ({} trials in all): wait for it to "
                        "finish (gcloud ai hp-tuning-jobs describe shows its state)".format(
                            job.get("displayName", job.get("name", "")), metric, len(job.get("trials") or [])))
    value, trial = max(scored, key=lambda pair: pair[0])
    params = {}
    for parameter in trial.get("parameters") or []:
        name, given = parameter.get("parameterId"), parameter.get("value")
        if name not in settings.FLAGS:
            raise DataError("trial {} sets {!r}, which is no walsmf.task flag: was this job's spec "
                            "cloud/vertex_hptuning.yaml?".format(trial.get("id"), name))
        params[name] = given
    params["exclude_seen"] = True  # the trials were scored on unread articles (--exclude_seen in their args)
    params = settings.params_as_settings(params, "trial {}".format(trial.get("id")))  # 20.0 → 20, as the flag
    return dict(params, **{metric: value, "trial": trial.get("id")})


def main(argv=None):
    """CLI: read the describe JSON (stdin, or --job_json), write best_params.json."""
    parser = flags.Parser(prog="python -m walsmf.best_trial", description=__doc__.split("\n\n")[0])
    parser.add_argument("--job_json", default="-", help="gcloud ai hp-tuning-jobs describe --format json's output "
                                                        "(default: standard input)")
    parser.add_argument("--output", default="best_params.json", help="the file to write (default best_params.json)")
    args = parser.parse_args(argv)
    check_writable(args.output, "--output", replaces=("a params file (a JSON object)", starts_with(b"{")))
    source = "standard input" if args.job_json == "-" else args.job_json
    if args.job_json != "-" and (os.path.isdir(args.job_json) or not os.path.exists(args.job_json)):
        raise DataError("--job_json {} is not a file: give gcloud ai hp-tuning-jobs describe's JSON".format(
            args.job_json))
    with (sys.stdin if args.job_json == "-" else open(args.job_json)) as f:
        job = json_object(f.read(), source, "give gcloud ai hp-tuning-jobs describe JOB_ID --format json's output")
    found = best_params(job)
    trial, value = found.pop("trial"), found.pop(HPTUNING_TAG)
    atomic_write_text(args.output, json.dumps(found, indent=1, sort_keys=True) + "\n")
    print("trial {}: {} {:.4f} -> {} (python -m walsmf.task --params_file {})".format(
        trial, HPTUNING_TAG, value, args.output, args.output))


if __name__ == "__main__":
    run_cli(main)
