"""A Vertex AI tuning job's best trial read back into best_params.json."""
import json

from helpers import run_in_process, run_module

from walsmf import best_trial, settings


def trial(number, state, recall, **parameters):
    return {"id": str(number), "state": state,
            "parameters": [{"parameterId": name, "value": value} for name, value in parameters.items()],
            "finalMeasurement": {"stepCount": "809", "metrics": [{"metricId": "recall_at_10", "value": recall}]}}


# as `gcloud ai hp-tuning-jobs describe --format json` prints a job (values as Vertex sends them: 20.0)
JOB = {"name": "projects/1/locations/us-central1/hyperparameterTuningJobs/7", "displayName": "wals_hp",
       "state": "JOB_STATE_SUCCEEDED",
       "trials": [trial(1, "SUCCEEDED", 0.21, target="rating", n_embeds=10.0, popularity_weight=0.0),
                  trial(2, "SUCCEEDED", 0.34, target="read", n_embeds=20.0, regularization=1.5,
                        popularity_weight=0.03, num_epochs=20.0),
                  trial(3, "INFEASIBLE", 0.0, target="read", n_embeds=40.0),
                  {"id": "4", "state": "FAILED", "parameters": []}]}


def test_the_best_succeeded_trial_becomes_the_flags_walsmf_task_takes(tmp_path):
    found = best_trial.best_params(JOB)
    assert found == {"trial": "2", "recall_at_10": 0.34, "target": "read", "n_embeds": 20, "regularization": 1.5,
                     "popularity_weight": 0.03, "num_epochs": 20.0, "exclude_seen": True}
    (tmp_path / "job.json").write_text(json.dumps(JOB))
    out = tmp_path / "best_params.json"
    result = run_module("walsmf.best_trial", "--job_json", tmp_path / "job.json", "--output", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("trial 2: recall_at_10 0.3400 -> ")
    applied = settings.parse(["--input_path", "d", "--output_dir", "m", "--params_file", str(out)])
    assert (applied.n_embeds, applied.target, applied.regularization, applied.exclude_seen) == (20, "read", 1.5, True)


def test_a_job_without_a_succeeded_trial_or_with_foreign_parameters_is_refused(tmp_path):
    out = tmp_path / "best_params.json"
    out.write_text('{"n_embeds": 30}')  # an earlier job's answer, kept when this one has none
    for job, expected in (({"displayName": "hp", "trials": [trial(1, "ACTIVE", 0.1)]},
                           "the tuning job hp has no succeeded trial reporting recall_at_10 (1 trials in all)"),
                          ({"trials": [trial(1, "SUCCEEDED", 0.1, learning_rate=0.1)]},
                           "trial 1 sets 'learning_rate', which is no walsmf.task flag"),
                          ("[1, 2]", "holds no JSON object")):
        path = tmp_path / "job.json"
        path.write_text(job if isinstance(job, str) else json.dumps(job))
        result = run_in_process("walsmf.best_trial", "--job_json", path, "--output", out)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and expected in lines[0], result.stderr
        assert out.read_text() == '{"n_embeds": 30}'
