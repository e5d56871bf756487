"""Train WALS on the lab's TFRecords, export it and write batch predictions.

    python -m walsmf.task --input_path data --output_dir wals_trained [--num_epochs 5 ...]

The lab's flags and defaults (walsmf.settings); runs unchanged under
`gcloud ai-platform local train` and as a Vertex AI custom job.
"""
from walsmf import settings
from walsmf.errors import run_cli


def main(argv=None):
    """CLI: parse the flags, then train, export and batch-predict (walsmf.trainer)."""
    parsed = settings.parse(argv)
    # Imported after parsing: --help and flag errors answer before TensorFlow loads.
    from walsmf import trainer
    trainer.run(parsed)


if __name__ == "__main__":
    run_cli(main)
