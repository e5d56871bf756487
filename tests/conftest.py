"""Shared fixtures: a small sample, a small data directory, a small trained model (helpers: helpers.py)."""
import pytest

# Fixtures that train a model, as what they cost: a test using one (itself or through another fixture) is marked
# training, and subprocess where the model is trained by a walsmf command.
TRAINING_FIXTURES = {"trained": ("training",), "gappy": ("training", "subprocess")}


def pytest_collection_modifyitems(items):
    """Mark each test that uses a training fixture as the fixture costs (pytest.ini's markers)."""
    for item in items:
        for fixture, marks in TRAINING_FIXTURES.items():
            if fixture in item.fixturenames:
                for mark in marks:
                    item.add_marker(mark)


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory):
    """The embedded sample at 1/100 of the lab's size."""
    from walsmf.sample import write_sample

    return write_sample(str(tmp_path_factory.mktemp("samples") / "sample.parquet"), scale=0.01, seed=0)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory, small_sample):
    """A data directory preprocessed from the small sample; returns (path, metadata)."""
    from walsmf.extract import extract
    from walsmf.preprocess import write_data_dir

    data_dir = str(tmp_path_factory.mktemp("data") / "data")
    metadata = write_data_dir(extract(sessions_file=small_sample), data_dir, log=lambda _: None)
    return data_dir, metadata


@pytest.fixture(scope="session")
def trained(tmp_path_factory, small_data):
    """The small data trained with the lab's defaults (batch 64 so it sweeps several times); its Settings."""
    from walsmf import model, settings

    data_dir, metadata = small_data
    args = settings.make(input_path=data_dir, output_dir=str(tmp_path_factory.mktemp("model") / "wals_trained"),
                         num_epochs=4, batch_size=64, nusers=metadata["nusers"], nitems=metadata["nitems"], seed=1)
    model.train_and_evaluate(args)
    return args
